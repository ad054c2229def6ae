"""Dedup quality on real speech and dedup cost at scale; prints one JSON object.

    python benchmarks/dedup_quality.py [--n 36] [--n-long 8] [--scale-n 100000] [--num-cpus 2] [--skip-scale]

Quality: the planted sample (`filtering.dedup.sample`): `--n` espeak-ng sentences by the sample voices, each
planted as every transform of `TRANSFORMS` (exact copy in FLAC, MP3 re-encode, 16 -> 8 -> 16 kHz, a 10 %
crop, +6 dB, -6 dB, 30 dB SNR noise) and read by another voice (a negative), plus `--n-long` long texts and
MP3 copies planted in an eval set; tokenized by the tokenize job's steps with the tests' codec (`tiny`), then
deduplicated (`filtering.dedup.job.run_dedup`, the job's driver sequence, in this process).

- near_dup_recall: planted copies dropped in their original's cluster / planted copies (goal >= 0.99);
  recall_by_transform: the same per transform
- false_dup_rate: negatives marked the same audio / negatives (goal <= 0.01). Negatives: each sentence by
  another voice, and each pair of different sentences by the same voice
- eval_overlap_recall: planted leaks (a base clip with an MP3 copy in eval; a long text read by another voice
  in eval) dropped as `eval_overlap` naming the planted eval row / planted leaks (goal >= 0.99);
  false_eval_overlap: rows dropped as `eval_overlap` that are no true leak (true: planted, a copy of a leaked
  clip, or a transcript sharing a 13-word window with an eval transcript, checked by brute force)
- jaccard_copies_min, jaccard_negatives_max: the fingerprint Jaccard margin around `near_jaccard`

Scale: `--scale-n` N and 10·N rows of distinct synthetic clips (token shards of random fingerprints, codes
and texts; 3 % planted copies that keep 80 % of their original's fingerprint), deduplicated by
`pipelines.dedup` as users run it (a subprocess with its own embedded Ray); synthetic because fingerprinting
a million real clips is the tokenize job's cost, not dedup's.

- dedup_cpu_ms_per_row: CPU seconds of every process of the 10·N job / rows (goal <= 1.0)
- dedup_driver_rss_10x_vs_1x: the driver's peak RSS at 10·N over N (goal <= 1.2)
- scale_planted_recall: planted copies found at 10·N
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cpu_info import cpu_info  # noqa: E402
from filtering.dedup.index import DedupSettings, words  # noqa: E402
from filtering.dedup.job import DedupOptions, run_dedup  # noqa: E402
from filtering.dedup.sample import TRANSFORMS, make_dedup_sample  # noqa: E402
from tokenization.codec_factory import load_codec  # noqa: E402
from tokenization.dedup_schema import DECISIONS  # noqa: E402
from tokenization.fingerprint import jaccard  # noqa: E402
from tokenization.schema import SHARDS, TokenRow, rows_to_table, table_to_parquet_bytes  # noqa: E402
from tokenization.sample_corpus import VOICES  # noqa: E402
from tokenization.tokenize_job import tokenize_local  # noqa: E402

AUDIO = ("exact_audio", "near_audio")


def tokenize(manifest: Path, out: Path, codec) -> str:
    return tokenize_local(str(manifest), str(out), codec, rows_per_shard=64, batch_size=8)


def decisions(out: str) -> dict[str, dict]:
    return {r["utt_id"]: r for f in sorted(Path(out, DECISIONS).glob("*.parquet")) for r in pq.read_table(f).to_pylist()}


def fingerprints(folder: str) -> dict[str, np.ndarray]:
    t = pq.read_table(Path(folder, SHARDS), columns=["utt_id", "audio_fp"])
    return {u: np.asarray(f, np.uint32) for u, f in zip(t.column("utt_id").to_pylist(), t.column("audio_fp").to_pylist())}


def quality(tmp: Path, n: int, n_long: int) -> dict:
    manifests = make_dedup_sample(tmp / "sample", n, n_long)
    codec = load_codec("tiny")
    folders = {k: tokenize(m, tmp / k, codec) for k, m in manifests.items()}
    out = str(tmp / "dedup")
    t0 = time.process_time()
    run_dedup([folders["base"], folders["copies"]], out, [folders["eval"]], DedupSettings(), DedupOptions())
    dedup_cpu = time.process_time() - t0
    rows = decisions(out)
    cid = {u: r["cluster_id"] for u, r in rows.items()}
    by_t = {}
    for t in TRANSFORMS:
        hits = [f"{t}_{i:03d}" in rows and not rows[f"{t}_{i:03d}"]["keep"] and cid.get(f"{t}_{i:03d}") == cid.get(f"orig_{i:03d}")
                for i in range(n)]
        by_t[t] = sum(hits) / n
    speakers = list(VOICES)
    negatives = [(f"orig_{i:03d}", f"voice_{i:03d}") for i in range(n)]
    negatives += [(f"orig_{i:03d}", f"orig_{j:03d}") for i in range(n) for j in range(i + 1, n)
                  if speakers[i % len(speakers)] == speakers[j % len(speakers)]]
    false = sum(1 for a, b in negatives if _same_audio(rows, a, b))
    true_leaks = _true_leaks(manifests, n_long)
    leaks = [(f"long_{j:03d}", f"evaltext_{j:03d}") for j in range(n_long)] + [(f"orig_{j:03d}", f"evalmp3_{j:03d}") for j in range(n_long)]
    found = sum(1 for u, e in leaks if u in rows and rows[u]["reason"] == "eval_overlap" and (rows[u]["matched_utt_id"] == e or u in true_leaks))
    planted_leaks = true_leaks | {u for u, _ in leaks}
    fps = {**fingerprints(folders["base"]), **fingerprints(folders["copies"])}
    copies_j = [jaccard(fps[f"orig_{i:03d}"], fps[f"{t}_{i:03d}"]) for t in TRANSFORMS for i in range(n)]
    neg_j = [jaccard(fps[a], fps[b]) for a, b in negatives]
    return {
        "near_dup_recall": round(sum(by_t.values()) / len(by_t), 4),
        "recall_by_transform": {k: round(v, 4) for k, v in by_t.items()},
        "false_dup_rate": round(false / len(negatives), 4), "negatives": len(negatives), "planted_copies": n * len(TRANSFORMS),
        "eval_overlap_recall": round(found / len(leaks), 4), "planted_leaks": len(leaks),
        "false_eval_overlap": sum(1 for u, r in rows.items() if r["reason"] == "eval_overlap" and u not in planted_leaks),
        "jaccard_copies_min": round(min(copies_j), 4), "jaccard_negatives_max": round(max(neg_j), 4),
        "near_jaccard": DedupSettings().near_jaccard, "quality_rows": sum(1 for _ in rows), "quality_dedup_cpu_s": round(dedup_cpu, 2),
    }


def _true_leaks(manifests: dict[str, Path], n_long: int) -> set[str]:
    """Rows that leak by construction, found by brute force on the manifests: copies of a clip planted in eval
    (as MP3), rows whose transcript shares a 13-word window with an eval transcript (a base sentence of 13+
    words inside a long eval text), and rows whose sentence an eval row reads inside its long text with the
    same voice (espeak is deterministic: the eval clip contains the training clip's audio)."""
    recs = {r["id"]: r for m in manifests.values() for r in map(json.loads, m.read_text().splitlines())}
    ev = [r for u, r in recs.items() if u.startswith("eval")]
    ev_windows = {w for r in ev for w in _windows(words(r["text"]), 13)}
    out = {f"{t}_{j:03d}" for t in TRANSFORMS for j in range(n_long)} | {f"orig_{j:03d}" for j in range(n_long)}
    for u, r in recs.items():
        if u.startswith("eval"):
            continue
        w = words(r["text"])
        if len(w) >= 13 and _windows(w, 13) & ev_windows:
            out.add(u)
        if any(e["speaker"] == r["speaker"] and f" {' '.join(w)} " in f" {' '.join(words(e['text']))} " for e in ev):
            out.add(u)
            out |= {f"{t}_{u[5:]}" for t in TRANSFORMS} if u.startswith("orig_") else set()
    return out


def _windows(w: list[str], n: int) -> set[tuple]:
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def _same_audio(rows: dict[str, dict], a: str, b: str) -> bool:
    """Whether a dedup run joined a and b as one recording: one dropped as an audio copy of the other, or both
    audio copies of the same row."""
    ra, rb = rows.get(a), rows.get(b)
    if ra is None or rb is None or ra["cluster_id"] != rb["cluster_id"]:
        return False
    ga = ra["matched_utt_id"] if ra["reason"] in AUDIO else a
    gb = rb["matched_utt_id"] if rb["reason"] in AUDIO else b
    return ga == gb


# --- scale ---------------------------------------------------------------------------------------------

FP_LEN, FRAMES, FILE_ROWS, PLANT = 40, 8, 25_000, 0.03
WORDS = np.array([f"w{i}" for i in range(5000)])


def synthetic_folder(folder: Path, n: int, seed: int) -> int:
    """N distinct synthetic token rows (3 % planted copies of an earlier row: 80 % of its fingerprint kept,
    Jaccard about 0.67 as real copies; another sha1, codes and text); returns the number planted."""
    rng = np.random.default_rng(seed)
    (folder / SHARDS).mkdir(parents=True, exist_ok=True)
    planted = 0
    for start in range(0, n, FILE_ROWS):
        m = min(FILE_ROWS, n - start)
        fps = rng.integers(0, 2**32, (m, FP_LEN), dtype=np.uint64).astype(np.uint32)
        copy = rng.random(m) < PLANT
        copy[0] = False
        originals = np.flatnonzero(~copy)  # a copy's source is never a copy (its fingerprint is final)
        src = originals[(rng.random(m) * np.searchsorted(originals, np.arange(m))).astype(int)]
        keep = rng.random((m, FP_LEN)) < 0.8
        fps[copy] = np.where(keep[copy], fps[src[copy]], fps[copy])
        planted += int(copy.sum())
        codes = rng.integers(0, 2048, (m, FRAMES, 8), dtype=np.uint16)
        words = WORDS[rng.integers(0, len(WORDS), (m, 8))]
        sha = [hashlib.sha1(rng.bytes(16)).hexdigest() for _ in range(m)]  # distinct decoded audio
        rows = [TokenRow(f"s{seed}_{start + i}", "synthetic", f"spk{i % 97}", "en", " ".join(words[i]), FRAMES / 12.5, FRAMES,
                         codes[i], sha[i], "bench", "train", None, np.unique(fps[i]))
                for i in range(m)]
        (folder / SHARDS / f"shard-{start // FILE_ROWS:05d}.parquet").write_bytes(table_to_parquet_bytes(rows_to_table(rows)))
    (folder / "_manifest.json").write_text("{}")
    return planted


def run_measured(args: list[str]) -> dict:
    """`python -m pipelines.dedup ARGS` as users run it; its summary, CPU seconds of every process of its session
    and the driver's peak RSS."""
    import psutil

    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO), "VOCALNET_RAY_DASHBOARD": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.dedup", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    cpu: dict[int, float] = {}
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for p in psutil.process_iter(["pid"]):
                try:
                    if os.getsid(p.pid) != proc.pid:
                        continue
                    t = p.cpu_times()
                    cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system + t.children_user + t.children_system)
                    if p.pid == proc.pid:
                        peak[0] = max(peak[0], p.memory_info().rss)
                except (psutil.Error, ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    summary = json.loads([line for line in stdout.splitlines() if line.startswith('{"output"')][-1])
    return {**summary, "wall_s": time.perf_counter() - t0, "cpu_s": sum(cpu.values()), "driver_rss": peak[0]}


def scale(tmp: Path, n: int, num_cpus: int) -> dict:
    one_in, ten_in = tmp / "x1", tmp / "x10"
    synthetic_folder(one_in, n, 1)
    planted = synthetic_folder(ten_in, 10 * n, 2)
    common = ["--num-cpus", str(num_cpus), "--parts", str(max(2, num_cpus))]
    one = run_measured(["--input", str(one_in), "--output", str(tmp / "d1"), *common])
    ten = run_measured(["--input", str(ten_in), "--output", str(tmp / "d10"), *common])
    dropped = sum(v.get("near_audio", 0) + v.get("exact_audio", 0) for v in ten["dropped_rows_by_source"].values())
    return {
        "dedup_cpu_ms_per_row": round(1000 * ten["cpu_s"] / ten["rows"], 3),
        "dedup_cpu_ms_per_row_1x": round(1000 * one["cpu_s"] / one["rows"], 3),
        "dedup_driver_rss_10x_vs_1x": round(ten["driver_rss"] / max(one["driver_rss"], 1), 3),
        "driver_peak_rss_mb_10x": round(ten["driver_rss"] / 2**20, 1),
        "rows_10x": ten["rows"], "wall_s_10x": round(ten["wall_s"], 1), "scale_planted": planted,
        "scale_planted_recall": round(dropped / max(planted, 1), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=36)
    p.add_argument("--n-long", type=int, default=8)
    p.add_argument("--scale-n", type=int, default=100_000)
    p.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    p.add_argument("--skip-scale", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = quality(Path(tmp), args.n, args.n_long)
        print(json.dumps(out), file=sys.stderr)  # the quality half, before the long scale runs
        if not args.skip_scale:
            out.update(scale(Path(tmp), args.scale_n, args.num_cpus))
    out["goals"] = {"near_dup_recall": ">= 0.99", "false_dup_rate": "<= 0.01", "eval_overlap_recall": ">= 0.99",
                    "dedup_cpu_ms_per_row": "<= 1.0", "dedup_driver_rss_10x_vs_1x": "<= 1.2"}
    out.update(scale_n=args.scale_n, num_cpus=args.num_cpus, cpu=cpu_info())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
