"""The audit at scale: rows per second at 1 M rows, and the driver's memory at 10x the rows of 1x (flat).

Writes a synthetic filter run (TTS-shard layout, the scored TTS schema, vectorized: codes in the tiny codec's
range, WER, DNSMOS/VAD columns, `meta` JSON, a few percent planted `audio_sha1` and text repeats), then runs
`python -m pipelines.audit` as users do (Ray tasks over the shards) at --rows / 10 and at --rows, polling the
driver process's resident memory and the CPU time of its process tree (the driver, its embedded Ray, the task
workers) every 0.1 s. Prints one JSON object: `audit_rows_per_s_1m` (wall; a shared box slows it, so also
`audit_rows_per_cpu_s_1m`, load-independent),
`audit_driver_rss_10x_vs_1x` (peak driver RSS at --rows over at --rows / 10; goal <= 1.2), both runs' figures,
and a check that the planted repeats were all found.

    PYTHONPATH=. python benchmarks/audit_scale.py [--rows 1000000] [--rows-per-shard 10000] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.cpu_info import cpu_info
from filtering.rules import Rules
from tokenization.codec_factory import load_codec
from tokenization.dialogue_schema import scored_tts_schema
from tokenization.schema import KEPT, MANIFEST, REJECTS, file_metadata

FRAME_RATE = 12.5
DUP_EVERY = 33  # every 33rd row repeats the previous row's audio_sha1 (3 %); every 50th its text (2 %)
TEXT_DUP_EVERY = 50
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shard_table(start: int, n: int, rng: np.random.Generator, rules: Rules) -> pa.Table:
    """`n` scored TTS rows from row `start` on, built column by column."""
    i = np.arange(start, start + n)
    dur = rng.uniform(0.5, 2.0, n).astype(np.float32)
    frames = np.ceil(dur.astype(np.float64) * FRAME_RATE).astype(np.int32)
    words = np.maximum(1, np.round(dur * 2.5)).astype(int)
    vocab = rng.integers(0, 20000, int(words.sum()))
    offs = np.concatenate([[0], np.cumsum(words)])
    text = [" ".join(f"w{v}" for v in vocab[offs[k]:offs[k + 1]]) for k in range(n)]
    sha = [hashlib.sha1(str(x).encode()).hexdigest() for x in i]
    for k in range(1, n):
        if i[k] % DUP_EVERY == 0:
            sha[k] = sha[k - 1]
        if i[k] % TEXT_DUP_EVERY == 0:
            text[k] = text[k - 1]
    values = pa.array(rng.integers(0, 2048, int(frames.sum()) * 8).astype(np.uint16), pa.uint16())
    fsl = pa.FixedSizeListArray.from_arrays(values, 8)
    codes = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(frames)]).astype(np.int32)), fsl)
    wer = np.where(rng.random(n) < 0.7, 0.0, rng.uniform(0.0, 0.5, n)).astype(np.float32)
    keep = wer <= np.float32(rules.max_wer)
    ovrl = rng.normal(3.2, 0.3, n).astype(np.float32)
    spk = i % 50
    split = np.where(spk % 10 == 0, "test", np.where(spk % 10 == 1, "valid", "train"))
    cols = {
        "utt_id": [f"u{x:07d}" for x in i], "source": [f"corpus{x % 2}" for x in i], "speaker": [f"spk{x}" for x in spk],
        "language": ["en"] * n, "text": text, "duration_s": dur, "n_frames": frames, "codes": codes, "audio_sha1": sha,
        "run_id": ["bench"] * n, "split": split.tolist(), "meta": [json.dumps({"dnsmos": round(float(x), 2)}) for x in ovrl + 0.1],
        "asr_hyp": text, "asr_model": ["synthetic"] * n, "text_ref_norm": text, "wer": wer, "cer": wer / 2,
        "n_ref_words": words.astype(np.int32), "n_sub": np.round(wer * words).astype(np.int32), "n_del": np.zeros(n, np.int32),
        "n_ins": np.zeros(n, np.int32), "dnsmos_sig": ovrl + 0.2, "dnsmos_bak": ovrl + 0.5, "dnsmos_ovrl": ovrl,
        "dnsmos_p808": ovrl + 0.3, "speech_ratio": rng.uniform(0.6, 1.0, n).astype(np.float32),
        "lead_silence_s": rng.uniform(0, 0.3, n).astype(np.float32), "trail_silence_s": rng.uniform(0, 0.3, n).astype(np.float32),
        "keep": keep, "reject_reason": [f"wer: {w:.3f} > {rules.max_wer:.3f}" if not k else "" for w, k in zip(wer, keep)],
    }
    schema = scored_tts_schema(8)
    return pa.table([pa.array(cols[f.name], f.type) if not isinstance(cols[f.name], pa.Array) else cols[f.name] for f in schema],
                    schema=schema)


def write_run(folder: str, n: int, rows_per_shard: int) -> dict:
    """A filter run's folder (kept/, rejects/, _manifest.json) of `n` synthetic rows; returns its counts."""
    rules = Rules()
    meta = file_metadata(load_codec("tiny").info, {"run_id": "bench", "job": "filter", "kind": "tts", "rules": json.dumps(rules.to_dict())})
    rng = np.random.default_rng(0)
    counts = {"in": n, "kept": 0, "rejected": 0, "quarantined": 0, "hours_kept": 0.0}
    for k, s in enumerate(range(0, n, rows_per_shard)):
        t = shard_table(s, min(rows_per_shard, n - s), rng, rules)
        kept = t.filter(t.column("keep"))
        rej = t.filter(pa.compute.invert(t.column("keep")))
        for sub, part in ((KEPT, kept), (REJECTS, rej)):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
            pq.write_table(part.replace_schema_metadata(meta), os.path.join(folder, sub, f"shard-{k:05d}.parquet"), compression="zstd")
        counts["kept"] += kept.num_rows
        counts["rejected"] += rej.num_rows
        counts["hours_kept"] += float(pa.compute.sum(kept.column("duration_s").cast(pa.float64())).as_py() or 0) / 3600
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump({"run_id": "bench", "counts": counts, "rules": rules.to_dict(), "kind": "tts"}, f)
    return counts


def run_audit(folder: str, report: str, num_cpus: int) -> dict:
    """`python -m pipelines.audit` in a fresh process (its own embedded Ray); wall seconds and peak driver RSS."""
    import psutil

    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_ADDRESS": "local", "VOCALNET_RAY_DASHBOARD": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.audit", folder, "--report", report, "--num-cpus", str(num_cpus)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak, cpu = psutil.Process(proc.pid), 0, {}
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
            for q in [ps, *ps.children(recursive=True)]:  # the driver, its embedded Ray and the task workers
                t = q.cpu_times()
                cpu[q.pid] = t.user + t.system
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"pipelines.audit failed:\n{err[-3000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(sum(cpu.values()), 1), "driver_peak_rss_mb": round(peak / 2**20, 1),
            "summary": json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rows-per-shard", type=int, default=10_000)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--keep", default="", help="keep the runs in this folder (default: a temp folder, removed)")
    args = p.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="audit_scale_")
    try:
        res = {}
        for label, n in (("1x", args.rows // 10), ("10x", args.rows)):
            run = os.path.join(tmp, f"run_{label}")
            t0 = time.perf_counter()
            counts = write_run(run, n, args.rows_per_shard) if not os.path.exists(run) else json.load(open(os.path.join(run, MANIFEST)))["counts"]
            write_s = time.perf_counter() - t0
            r = run_audit(run, os.path.join(tmp, f"report_{label}"), args.num_cpus)
            a = json.load(open(os.path.join(tmp, f"report_{label}", "audit.json")))
            dup_sha = sum(1 for x in range(1, n) if x % DUP_EVERY == 0 and x % args.rows_per_shard)  # a shard's first row repeats nothing
            res[label] = {"rows": n, "files": 2 * math.ceil(n / args.rows_per_shard), "write_s": round(write_s, 1), **r,
                          "rows_per_s": round(n / r["wall_s"], 1), "rows_per_cpu_s": round(n / max(r["cpu_s"], 1e-9), 1), "counts_match": a["stages"][0]["kept"] == counts["kept"]
                          and a["stages"][0]["rejected"] == counts["rejected"],
                          "duplicate_groups": a["duplicates"]["n_groups"], "planted_sha_repeats": dup_sha,
                          "lint_failed": a["lint"]["failed"]}
            del res[label]["summary"]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "rows": args.rows, "rows_per_shard": args.rows_per_shard, "num_cpus": args.num_cpus,
        "audit_rows_per_s_1m": res["10x"]["rows_per_s"], "audit_rows_per_cpu_s_1m": res["10x"]["rows_per_cpu_s"],
        "audit_driver_rss_10x_vs_1x": round(res["10x"]["driver_peak_rss_mb"] / res["1x"]["driver_peak_rss_mb"], 3),
        "runs": res, "cpu": cpu_info(), "loadavg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
