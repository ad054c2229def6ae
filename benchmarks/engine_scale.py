"""The sharded-job engine at N and 10N rows, and an incremental rerun; prints one JSON object.

    python benchmarks/engine_scale.py [--n 100000] [--rows-per-unit 3000] [--num-cpus 2]

A synthetic corpus of N (then 10N) short clips, listed as manifest byte ranges of about `--rows-per-unit`
rows each (the units a 1M-line manifest gives with `--unit-bytes`), is tokenized by `pipelines.tokenize`
as users run it (a subprocess with its own embedded Ray) with one change: a pass-through codec that
returns fixed codes, so what is measured is the engine (listing, reading, decoding, batching, Ray Data,
the writer, the manifest), not the codec.

- engine_cpu_ms_per_row: CPU seconds of every process of the 10N job (driver, Ray's own, workers) / rows
  (goal <= 1.0: 4.5 M rows then cost the engine ~1.2 core-hours)
- rows_10x, rows_per_s_10x: the 10N job's rows and rows per wall second of its pipeline
- writer_peak_rss_10x_vs_1x, driver_peak_rss_10x_vs_1x: peak RSS of the writer actor / the driver at 10N
  over 1N (goal <= 1.2 each: memory must not grow with the corpus); writer_peak_rss_mb
- grow_1pct_s_vs_full_s: wall time of a rerun into the 10N folder after 1 % more units arrived / the 10N
  run's wall time, both as users run them (goal <= 0.1)
- writer_cpu_ms_per_row, writer_ceiling_rows_per_s: the one writer actor's CPU per row at 10N, and the rows
  per second it could take at that cost (where a cluster of encoders would start waiting on it)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cpu_info import cpu_info  # noqa: E402
from tokenization.codec import CodecInfo, SpeechCodec  # noqa: E402

PASS_THROUGH = "passthrough"
LINE_BYTES = 120  # about one manifest line below: --unit-bytes = rows per unit x this


class PassThroughCodec(SpeechCodec):
    """Benchmark only: fixed codes of the right shape, so the job's cost is the engine's."""

    info = CodecInfo("passthrough", "0", "none", 16000, 12.5, 8, 2048)

    def encode(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros((self.n_frames(len(w)), self.n_codebooks), np.uint16) for w in waveforms]

    def decode(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros(len(c) * self.samples_per_frame, np.float32) for c in codes]


def job_main(argv: list[str]) -> None:
    """`pipelines.tokenize` with `--codec passthrough` meaning `PassThroughCodec` (in the driver and, pickled
    with the job, in every encoder actor)."""
    import pipelines.tokenize as tok
    from pipelines.cli import run

    real_load, real_job = tok.load_codec, tok.tokenize_job
    tok.load_codec = lambda spec, **kw: PassThroughCodec() if spec == PASS_THROUGH else real_load(spec, **kw)
    tok.tokenize_job = lambda opts, codec, *a, **kw: real_job(opts, PassThroughCodec() if codec == PASS_THROUGH else codec, *a, **kw)
    run(tok.main, argv)


def make_corpus(folder: Path, n: int, name: str, start: int = 0, clips: int = 64) -> Path:
    """A JSONL manifest of n rows over `clips` distinct 0.2 s WAVs (16 kHz noise): the page cache holds the
    audio, so the figures are the engine's, not the disk's."""
    import soundfile as sf

    wavs = folder / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for c in range(clips):
        if not (wavs / f"c{c:03d}.wav").exists():
            sf.write(wavs / f"c{c:03d}.wav", (rng.standard_normal(3200) * 0.1).astype(np.float32), 16000)
    path = folder / name
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"u{i:09d}", "audio_path": f"wavs/c{i % clips:03d}.wav", "speaker": f"spk{i % 997}",
                                "text": "a short synthetic transcript"}) + "\n")
    return path


def run_job(corpus: Path, out: Path, num_cpus: int, unit_bytes: int) -> dict:
    """The job as users run it (a subprocess, its own Ray); its summary plus wall time, CPU seconds of every
    process of its session, and the driver's and writer actor's peak RSS."""
    import psutil

    cmd = [sys.executable, __file__, "job", "--input", str(corpus), "--output", str(out), "--codec", PASS_THROUGH,
           "--format", "jsonl", "--unit-bytes", str(unit_bytes), "--num-cpus", str(num_cpus), "--max-duration", "5"]
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    cpu: dict[int, float] = {}
    writers: set[int] = set()
    peak = {"driver": 0, "writer": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for p in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if os.getsid(p.pid) != proc.pid:
                        continue
                    t = p.cpu_times()
                    cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system + t.children_user + t.children_system)
                    rss = p.memory_info().rss
                    if p.pid == proc.pid:
                        peak["driver"] = max(peak["driver"], rss)
                    elif "_WriterActor" in " ".join(p.info["cmdline"] or []):
                        peak["writer"] = max(peak["writer"], rss)
                        writers.add(p.pid)
                except (psutil.Error, ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    summary = json.loads([line for line in stdout.splitlines() if line.startswith('{"output"')][-1])
    return {**summary, "wall_s": wall, "cpu_s": sum(cpu.values()), "writer_cpu_s": sum(cpu.get(p, 0.0) for p in writers),
            "driver_rss": peak["driver"], "writer_rss": peak["writer"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000, help="rows of the 1x corpus (10x runs 10 n)")
    p.add_argument("--rows-per-unit", type=int, default=3000)
    p.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    args = p.parse_args()
    unit_bytes = args.rows_per_unit * LINE_BYTES
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = run_job(make_corpus(tmp / "x1", args.n, "part-000.jsonl"), tmp / "out1", args.num_cpus, unit_bytes)
        ten_corpus = make_corpus(tmp / "x10", 10 * args.n, "part-000.jsonl")
        ten = run_job(ten_corpus, tmp / "out10", args.num_cpus, unit_bytes)
        make_corpus(tmp / "x10", args.n // 10, "part-001.jsonl", start=10 * args.n)  # 1 % more rows, in new units
        grow = run_job(tmp / "x10", tmp / "out10", args.num_cpus, unit_bytes)
    rows = ten["rows_in"]
    result = {
        "engine_cpu_ms_per_row": round(1000 * ten["cpu_s"] / rows, 3),
        "rows_10x": rows,
        "rows_per_s_10x": round(rows / ten["pipeline_s"], 1),
        "writer_peak_rss_10x_vs_1x": round(ten["writer_rss"] / max(one["writer_rss"], 1), 3),
        "driver_peak_rss_10x_vs_1x": round(ten["driver_rss"] / max(one["driver_rss"], 1), 3),
        "writer_peak_rss_mb": round(ten["writer_rss"] / 2**20, 1),
        "grow_1pct_s_vs_full_s": round(grow["wall_s"] / ten["wall_s"], 3),
        "n": args.n,
        "rows_per_unit": args.rows_per_unit,
        "engine_cpu_ms_per_row_1x": round(1000 * one["cpu_s"] / one["rows_in"], 3),
        # the one writer's ceiling: rows/s it could take at its CPU cost per row (a writer per node or per group
        # of units would be the next design when encoders outrun it)
        "writer_cpu_ms_per_row": round(1000 * ten["writer_cpu_s"] / rows, 4),
        "writer_ceiling_rows_per_s": round(rows / max(ten["writer_cpu_s"], 1e-9)),
        "driver_peak_rss_mb": round(ten["driver_rss"] / 2**20, 1),
        "wall_s": {"1x": round(one["wall_s"], 1), "10x": round(ten["wall_s"], 1), "grow_1pct": round(grow["wall_s"], 1)},
        "grow_units": {k: grow[k] for k in ("units_new", "units_changed", "units_removed", "units_unchanged")},
        "grow_shards_written": grow["shards_written"],
        "num_cpus": args.num_cpus,
        "cpu": cpu_info(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "job":
        job_main(sys.argv[2:])
    else:
        main()
