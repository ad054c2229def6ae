"""Driver-side planning at N and 10·N utterances, and tar vs loose-file reading; prints one JSON object.

    python benchmarks/planning_scale.py [--n 100000] [--per-tar 1000]

Figures:
    driver_rss_10x_vs_1x          peak RSS of the driver's planning (unit listing + run id + resume check)
                                  at 10·N / at N utterances, worst of the JSONL and WebDataset inputs (goal <= 1.2)
    planning_s_per_million_rows   planning seconds at 10·N per million utterances, worst input (goal <= 2)
    tar_read_vs_files             audio-s/s of the tokenize job's steps (engine `run_local`, tiny codec) reading
                                  WebDataset tars / reading the same clips as loose WAV files, best of two
                                  alternating runs each (goal >= 0.95)
Each planning measurement runs in a fresh process, so peak RSS is its own. The synthetic inputs
need no audio: a JSONL manifest of N lines, and N/`per_tar` tar files (the driver never opens them).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.cpu_info import cpu_info  # noqa: E402
from tokenization.readers.registry import formats, list_units  # noqa: E402
from tokenization.units import ReaderOptions  # noqa: E402


PLAN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
t = time.perf_counter()
from tokenization.engine.output_folder import compute_run_id, pending_units
from tokenization.readers.registry import list_units
from tokenization.units import ReaderOptions
t_import = time.perf_counter() - t
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
units = list_units(sys.argv[2], sys.argv[3], ReaderOptions())
run_id = compute_run_id({"bench": 1})
todo = pending_units(sys.argv[4], units)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rss_after_imports_kb": rss_before, "units": len(units), "todo": len(todo)}))
"""


def plan(uri: str, fmt: str, out: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PLAN, str(ROOT), uri, fmt, out], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def jsonl_manifest(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"utt{i:09d}", "audio_path": f"wavs/spk{i % 997}/utt{i:09d}.wav",
                                "text": "a synthetic transcript of about this length", "speaker": f"spk{i % 997}"}) + "\n")
    return path


def tar_listing(folder: Path, n: int, per_tar: int) -> Path:
    """N/per_tar empty tar files: the driver lists tars, never their members."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(max(1, n // per_tar)):
        with tarfile.open(folder / f"EN-B{k:06d}.tar", "w"):
            pass
    return folder


def planning(work: Path, n: int, per_tar: int) -> dict:
    out = {}
    inputs = {"jsonl": lambda m: jsonl_manifest(work / f"manifest_{m}.jsonl", m)}
    if "webdataset" in formats():
        inputs["webdataset"] = lambda m: tar_listing(work / f"tars_{m}", m, per_tar)
    for fmt, make in inputs.items():
        runs = {}
        for m in (n, 10 * n):
            uri = make(m)
            runs[m] = plan(str(uri), fmt, str(work / f"out_{fmt}_{m}"))
        out[fmt] = {"rss_10x_vs_1x": round(runs[10 * n]["peak_rss_kb"] / runs[n]["peak_rss_kb"], 3),
                    "planning_s_1x": round(runs[n]["seconds"], 4), "planning_s_10x": round(runs[10 * n]["seconds"], 4),
                    "planning_s_per_million_rows": round(runs[10 * n]["seconds"] / (10 * n / 1e6), 4),
                    "peak_rss_mb_1x": round(runs[n]["peak_rss_kb"] / 1024, 1),
                    "peak_rss_mb_10x": round(runs[10 * n]["peak_rss_kb"] / 1024, 1), "units_10x": runs[10 * n]["units"]}
    return out


def tar_vs_files(work: Path, repeat: int) -> dict:
    """The same espeak clips through the tokenize steps, as loose WAVs and as WebDataset tars (WAV + JSON members)."""
    from tokenization.codec_factory import load_codec
    from tokenization.engine.local_run import run_local
    from tokenization.sample_corpus import make_tts_sample
    from tokenization.schema import file_metadata
    from tokenization.tokenize_job import tokenize_job

    if "webdataset" not in formats():
        return {"tar_read_vs_files": None, "note": "no webdataset reader registered"}
    manifest = make_tts_sample(work / "sample")
    recs = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    loose = work / "loose.jsonl"
    lines, tars = [], work / "tars"
    tars.mkdir()
    for r_i in range(repeat):
        with tarfile.open(tars / f"part-{r_i:04d}.tar", "w") as tar:
            for i, r in enumerate(recs):
                key = f"r{r_i}_{i:05d}"
                lines.append(json.dumps({**r, "id": key, "audio_path": str(manifest.parent / r["audio_path"])}))
                tar.add(str(manifest.parent / r["audio_path"]), arcname=f"{key}.wav")
                meta = json.dumps({"id": key, "text": r["text"], "speaker": r.get("speaker", "")}).encode()
                info = tarfile.TarInfo(f"{key}.json")
                info.size = len(meta)
                tar.addfile(info, io.BytesIO(meta))
    loose.write_text("\n".join(lines) + "\n")
    codec = load_codec("tiny")
    codec.encode([np.zeros(codec.sample_rate, np.float32)])  # warm-up, so neither timed run pays for first calls
    opts = ReaderOptions()
    rates: dict[str, dict] = {}
    # Twice each, alternating, best of two: the codec's kernels warm up per input shape, and both inputs
    # hold the same clips, so whichever ran first would pay for it.
    for attempt in range(2):
        for name, uri, fmt in (("files", str(loose), "jsonl"), ("tars", str(tars), "webdataset")):
            units = list_units(uri, fmt, opts)
            job = tokenize_job(opts, codec, "bench", target_rate=codec.sample_rate, max_seconds=60.0, rows_per_shard=10_000,
                               batch_size=16)
            out = work / f"tok_{name}_{attempt}"
            t = time.perf_counter()
            run_local(job, units, str(out), file_metadata(codec.info))
            seconds = time.perf_counter() - t
            audio_s = float(sum(pq.read_table(out / "shards").column("duration_s").to_numpy()))
            if name not in rates or seconds < rates[name]["wall_s"]:
                rates[name] = {"audio_s": round(audio_s, 2), "wall_s": round(seconds, 2), "audio_s_per_s": round(audio_s / seconds, 2)}
    return {"tar_read_vs_files": round(rates["tars"]["audio_s_per_s"] / rates["files"]["audio_s_per_s"], 3), "runs": rates}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000, help="utterances of the 1x input (10x is ten times this)")
    p.add_argument("--per-tar", type=int, default=1000, help="utterances per tar in the WebDataset listing")
    p.add_argument("--tar-repeat", type=int, default=6, help="copies of the espeak sample in the tar-vs-files run")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="planning_scale_"))
    plans = planning(work, args.n, args.per_tar)
    tar = tar_vs_files(work, args.tar_repeat)
    print(json.dumps({
        "driver_rss_10x_vs_1x": max(v["rss_10x_vs_1x"] for v in plans.values()),
        "planning_s_per_million_rows": max(v["planning_s_per_million_rows"] for v in plans.values()),
        "tar_read_vs_files": tar["tar_read_vs_files"],
        "n": args.n, "inputs": plans, "tar_vs_files": tar,
        "goals": {"driver_rss_10x_vs_1x": 1.2, "planning_s_per_million_rows": 2.0, "tar_read_vs_files": 0.95},
        "cpu": cpu_info(),
    }))


if __name__ == "__main__":
    main()
