"""Audit report build time and size for a 20 000-row filter run (TTS-shard layout: codes, no audio).

Writes a synthetic filter output with the filter's own shard writer (rows scored with the real
rules, codes from the tiny codec's code range), then builds the full report: stats, lint,
threshold curve, quality metadata and audio players (clips decoded from codes with the tiny
codec), then again without a codec (clips not decoded) to show the codec's share. Prints one
JSON object: build seconds (wall and CPU), report/audio bytes against the cap, the CPU and the
load average (the box may be shared: CPU seconds are the load-independent figure).

    PYTHONPATH=. python benchmarks/audit_report.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np

from benchmarks.cpu_info import cpu_info
from filtering.audit import AuditOptions, ListenOptions, audit
from filtering.filter_job import FilterSink
from filtering.rules import Rules, decide
from tokenization.codec_factory import load_codec
from tokenization.dialogue_schema import ScoredTTSRow
from tokenization.engine.jobs import Item
from tokenization.engine.output_folder import UnitReport, shard_name, write_unit_report
from tokenization.engine.writer import write_manifest, write_shard
from tokenization.schema import file_metadata
from tokenization.units import Unit, keyed

WORDS = "the a of to and in is it you that he was for on are with as his they be at one have this from".split()
def synthetic_rows(n: int, rng: np.random.Generator, rules: Rules) -> list[dict]:
    rows = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(4, 16))))
        hyp = [w if rng.random() > 0.08 else str(rng.choice(WORDS)) for w in words]
        n_sub = sum(a != b for a, b in zip(words, hyp))
        dur = float(rng.uniform(1.0, 6.0))
        n_frames = math.ceil(dur * 12.5)
        row = {"utt_id": f"u{i:06d}", "source": f"corpus{i % 2}", "speaker": f"spk{i % 50}", "language": "en",
               "text": " ".join(words), "duration_s": dur, "n_frames": n_frames,
               "codes": rng.integers(0, 2048, size=(n_frames, 8), dtype=np.uint16).tolist(),
               "audio_sha1": f"{rng.integers(1 << 62):016x}", "run_id": "bench", "split": "train",
               "asr_hyp": " ".join(hyp), "asr_model": "synthetic", "text_ref_norm": " ".join(words),
               "wer": n_sub / len(words), "cer": n_sub / len(words) / 2, "n_ref_words": len(words),
               "n_sub": n_sub, "n_del": 0, "n_ins": 0, "meta": json.dumps({"dnsmos": round(float(rng.normal(3.2, 0.3)), 2)})}
        row["keep"], row["reject_reason"] = decide(row, rules)
        rows.append(row)
    return rows


def write_run(folder: str, n: int, rows_per_shard: int = 2000) -> None:
    """A filter run's folder as the engine writes it: one synthetic unit cut into shards."""
    rules, sink = Rules(), FilterSink("tts")
    info = load_codec("tiny").info
    meta = file_metadata(info, {"run_id": "bench", "job": "filter", "kind": "tts", "rules": json.dumps(rules.to_dict())})
    rows = synthetic_rows(n, np.random.default_rng(0), rules)
    unit = keyed([Unit(uri="synthetic", fmt="synthetic")], "")[0]
    for k, s in enumerate(range(0, n, rows_per_shard)):
        items = [Item(unit=unit.key, shard=k, pos=s + i, id=r["utt_id"], row=ScoredTTSRow.from_dict(r))
                 for i, r in enumerate(rows[s:s + rows_per_shard])]
        write_shard(folder, shard_name(unit.key, k), items, sink, meta)
    write_unit_report(folder, UnitReport(unit.key, unit.where, n, -(-n // rows_per_shard)))
    write_manifest(folder, "bench", [unit], sink.tables, {"rules": rules.to_dict(), "kind": "tts", "codec": info.__dict__})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, report = os.path.join(tmp, "run"), os.path.join(tmp, "report")
        t0 = time.perf_counter()
        write_run(run, args.rows)
        t1 = time.perf_counter()
        opts = ListenOptions(codec="tiny")
        c1 = time.process_time()
        a = audit(run, report, options=AuditOptions(opts))
        t2, c2 = time.perf_counter(), time.process_time()
        html_bytes = os.path.getsize(os.path.join(report, "index.html"))
        json_bytes = os.path.getsize(os.path.join(report, "audit.json"))
        audit(run, report + "_silent", options=AuditOptions(ListenOptions(codec=None)))  # clips from codes not decoded
        t3, c3 = time.perf_counter(), time.process_time()
    print(json.dumps({
        "rows": args.rows, "kept": a["stages"][0]["kept"], "rejected": a["stages"][0]["rejected"],
        "write_run_s": round(t1 - t0, 2), "build_s": round(t2 - t1, 2), "rows_per_s": round(args.rows / (t2 - t1), 1),
        "build_cpu_s": round(c2 - c1, 2), "build_without_codec_s": round(t3 - t2, 2), "build_without_codec_cpu_s": round(c3 - c2, 2),
        "codec_share_of_build_cpu": round(1 - (c3 - c2) / (c2 - c1), 3),
        "html_bytes": html_bytes, "audit_json_bytes": json_bytes, "audio_bytes": a["listen"]["bytes"],
        "audio_cap_bytes": opts.max_bytes, "audio_under_cap": a["listen"]["bytes"] <= opts.max_bytes,
        "clips": a["listen"]["n_clips"], "html_bytes_per_row": round(html_bytes / args.rows, 2), "cpu": cpu_info(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # a shared box slows wall time; compare runs at similar load
    }))


if __name__ == "__main__":
    main()
