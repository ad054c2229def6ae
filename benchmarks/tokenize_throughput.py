"""Tokenization throughput, storage density and memory scaling; prints one JSON object.

    python benchmarks/tokenize_throughput.py [--repeat 8] [--num-cpus 2]

Measured in one run on the same audio and cores:
- pipeline_vs_bare: Ray pipeline audio-seconds/s / a bare loop (load, resample, codec.encode) in
  one process. Both include building the codec; Ray start-up is excluded (a cluster is started once).
- pipeline_vs_bare_4x: the same with 4x the input (goal >= 0.95): actor start-up and planning are
  paid once per job, so a longer job shows what the pipeline costs per audio second. The bare
  loop's rate does not depend on the input size, so both ratios divide by the 1x bare rate.
- bytes_per_audio_second: shard bytes on disk per second of audio (goal <= 150 for 8 x 12.5 Hz).
- peak_rss_2x_vs_1x: peak resident memory of the job's whole process tree (driver + embedded Ray)
  with 2x the input / with 1x (goal <= 1.15: memory must not grow with the corpus).
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

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cpu_info import cpu_info  # noqa: E402
from tokenization.audio import load_audio  # noqa: E402
from tokenization.codec_factory import load_codec  # noqa: E402
from tokenization.readers.registry import read_input  # noqa: E402
from tokenization.sample_corpus import make_tts_sample  # noqa: E402


def repeated_manifest(sample: Path, repeat: int, out: Path) -> Path:
    """The sample `repeat` times over, with distinct ids (same audio)."""
    lines = sample.read_text().splitlines()
    rows = []
    for r in range(repeat):
        for line in lines:
            row = json.loads(line)
            row["id"] = f"{row['id']}_r{r}"
            row["audio_path"] = str(sample.parent / row["audio_path"])
            rows.append(json.dumps(row))
    out.write_text("\n".join(rows) + "\n")
    return out


def bare_loop(manifest: Path, batch_size: int) -> tuple[float, float]:
    """(audio seconds, wall seconds) for a plain loop calling the codec directly."""
    t0 = time.perf_counter()
    codec = load_codec("tiny")
    entries, _ = read_input(str(manifest))
    seconds = 0.0
    for i in range(0, len(entries), batch_size):
        waves = [load_audio(e.audio.path, codec.sample_rate) for e in entries[i : i + batch_size]]
        codec.encode(waves)
        seconds += sum(len(w) for w in waves) / codec.sample_rate
    return seconds, time.perf_counter() - t0


def run_job(manifest: Path, out: Path, num_cpus: int, batch_size: int) -> tuple[dict, float, int]:
    """Run the job as its users do (a subprocess); (summary, pipeline wall seconds, peak tree RSS bytes)."""
    cmd = [sys.executable, "-m", "pipelines.tokenize", "--input", str(manifest), "--output", str(out),
           "--codec", "tiny", "--num-cpus", str(num_cpus), "--batch-size", str(batch_size), "--rows-per-shard", "100000"]
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak = 0
    stop = threading.Event()

    def sample_rss():
        nonlocal peak
        while not stop.is_set():
            total = 0
            for p in psutil.process_iter(["pid"]):
                try:
                    if os.getsid(p.pid) == proc.pid:
                        total += p.memory_info().rss
                except (psutil.Error, ProcessLookupError, PermissionError):
                    pass
            peak = max(peak, total)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    summary = json.loads(stdout.strip().splitlines()[-1])
    return summary, summary["pipeline_s"], peak


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=8, help="copies of the 36-utterance sample in the 1x input")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = make_tts_sample(tmp / "sample")
        m1 = repeated_manifest(sample, args.repeat, tmp / "x1.jsonl")
        m2 = repeated_manifest(sample, 2 * args.repeat, tmp / "x2.jsonl")
        m4 = repeated_manifest(sample, 4 * args.repeat, tmp / "x4.jsonl")

        bare_audio_s, bare_wall = bare_loop(m1, args.batch_size)
        s1, pipe_wall1, rss1 = run_job(m1, tmp / "out1", args.num_cpus, args.batch_size)
        s2, pipe_wall2, rss2 = run_job(m2, tmp / "out2", args.num_cpus, args.batch_size)
        s4, pipe_wall4, _ = run_job(m4, tmp / "out4", args.num_cpus, args.batch_size)
        shard_bytes = sum(f.stat().st_size for f in (tmp / "out1" / "shards").glob("*.parquet"))
        audio_s = s1["hours"] * 3600
        bare_rate = bare_audio_s / bare_wall
        result = {
            "pipeline_vs_bare": round((audio_s / pipe_wall1) / bare_rate, 3),
            "pipeline_vs_bare_4x": round((s4["hours"] * 3600 / pipe_wall4) / bare_rate, 3),
            "bytes_per_audio_second": round(shard_bytes / audio_s, 1),
            "peak_rss_2x_vs_1x": round(rss2 / rss1, 3),
            "bare_audio_s_per_s": round(bare_audio_s / bare_wall, 2),
            "pipeline_audio_s_per_s": round(audio_s / pipe_wall1, 2),
            "pipeline_2x_audio_s_per_s": round(s2["hours"] * 3600 / pipe_wall2, 2),
            "pipeline_4x_audio_s_per_s": round(s4["hours"] * 3600 / pipe_wall4, 2),
            "pipeline_s_1x": round(pipe_wall1, 2),
            "pipeline_s_4x": round(pipe_wall4, 2),
            "audio_seconds_1x": round(audio_s, 1),
            "utterances_1x": s1["kept"],
            "shard_bytes_1x": shard_bytes,
            "peak_rss_1x_mb": round(rss1 / 2**20, 1),
            "peak_rss_2x_mb": round(rss2 / 2**20, 1),
            "num_cpus": args.num_cpus,
            "codec": "tiny Mimi (random init), CPU",
            "cpu": cpu_info(),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
