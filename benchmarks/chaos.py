"""Faults as a benchmark: a tokenize job whose step processes are SIGKILLed at seeded random times ends with
the same files as a fault-free run; prints one JSON object.

    python benchmarks/chaos.py [--units 50] [--rows-per-unit 8] [--kills 4] [--seed 0] [--num-cpus 2]

A synthetic corpus (`--units` manifest byte ranges of about `--rows-per-unit` 0.4 s clips each, a few rows
pointing at missing files so quarantine tables are written too) is tokenized twice by `pipelines.tokenize`
as users run it (a subprocess with its own embedded Ray, tiny codec): once undisturbed, once while a killer
thread SIGKILLs step processes of the job's session, found by their Ray process title, at random times drawn
from `--seed` over the clean run's wall time: a reader task worker (`_read_task`), an encoder actor
(`_StepActor`) and the writer actor (`_WriterActor`), in turn. Ray restarts the actors and retries the
tasks; units whose shards a killed writer lost run again (`pipelines/sharded_ray.py`).

- kills: SIGKILLs delivered (goal >= 3), and kills_by_kind
- identical: 1 when every file under `shards/` and `quarantine/` matches the clean run's by name and bytes
- counts_add_up: 1 when the faulted run's rows in = kept + quarantined, in its summary and `_manifest.json`,
  and its counts equal the clean run's
- wall_vs_clean: the faulted run's wall time / the clean run's (goal <= 2.0)
- cpu: the CPU it ran on
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
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

LINE_BYTES = 130  # about one manifest line below: --unit-bytes = rows per unit x this
TARGETS = ("_read_task", "_StepActor", "_WriterActor")  # reader task worker, encoder actor, writer actor
CLIP_S = 0.4


def make_corpus(folder: Path, units: int, rows_per_unit: int, clips: int = 32) -> Path:
    """A JSONL manifest of units x rows_per_unit rows over `clips` distinct 16 kHz noise-and-tone WAVs; every
    50th row names a missing file (a quarantine row)."""
    import soundfile as sf

    wavs = folder / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(CLIP_S * 16000)) / 16000
    for c in range(clips):
        tone = 0.2 * np.sin(2 * np.pi * (120 + 20 * c) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(wavs / f"c{c:03d}.wav", tone.astype(np.float32), 16000)
    path = folder / "manifest.jsonl"
    with open(path, "w") as f:
        for i in range(units * rows_per_unit):
            audio = f"wavs/missing{i}.wav" if i % 50 == 49 else f"wavs/c{i % clips:03d}.wav"
            f.write(json.dumps({"id": f"u{i:07d}", "audio_path": audio, "speaker": f"spk{i % 7}",
                                "text": "a short synthetic transcript"}) + "\n")
    return path


def _session_procs(sid: int, marker: str) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(p.pid) == sid and marker in " ".join(p.info["cmdline"] or []):
                found.append(p.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return found


def run_job(corpus: Path, out: Path, args, kill_at: list[float] | None = None) -> dict:
    """The job as users run it; with `kill_at` (seconds after start), a SIGKILL per time to a process of the
    next kind in TARGETS (the first of that kind found in the job's session; waits until one runs)."""
    cmd = [sys.executable, "-m", "pipelines.tokenize", "--input", str(corpus), "--output", str(out), "--codec", "tiny",
           "--format", "jsonl", "--unit-bytes", str(args.rows_per_unit * LINE_BYTES), "--rows-per-shard", "4",
           "--num-cpus", str(args.num_cpus), "--max-duration", "5"]
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO), "VOCALNET_RAY_DASHBOARD": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    kills: list[dict] = []

    def killer() -> None:
        for n, at in enumerate(kill_at or []):
            kind = TARGETS[n % len(TARGETS)]
            while proc.poll() is None and time.perf_counter() - t0 < at:
                time.sleep(0.05)
            while proc.poll() is None:
                pids = _session_procs(proc.pid, kind)
                if pids:
                    try:
                        os.kill(pids[0], signal.SIGKILL)
                        kills.append({"kind": kind, "at_s": round(time.perf_counter() - t0, 2)})
                        break
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"tokenize failed after kills {kills}:\n{stderr[-3000:]}")
    summary = json.loads([line for line in stdout.splitlines() if line.startswith('{"output"')][-1])
    return {**summary, "wall_s": wall, "kills": kills}


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for sub in ("shards", "quarantine")
            for p in sorted((out / sub).glob("*")) if p.is_file()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--units", type=int, default=50)
    p.add_argument("--rows-per-unit", type=int, default=8)
    p.add_argument("--kills", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaos_") as tmp:
        root = Path(tmp)
        corpus = make_corpus(root / "corpus", args.units, args.rows_per_unit)
        clean = run_job(corpus, root / "clean", args)
        rng = random.Random(args.seed)
        # spread over the middle of the clean run: Ray has started and the writer holds rows
        kill_at = sorted(rng.uniform(0.25, 0.85) * clean["wall_s"] for _ in range(args.kills))
        faulted = run_job(corpus, root / "faulted", args, kill_at)
        a, b = files(root / "clean"), files(root / "faulted")
        manifest = json.loads((root / "faulted" / "_manifest.json").read_text())
        counts = ("rows_in", "kept", "quarantined")
        adds_up = (faulted["rows_in"] == faulted["kept"] + faulted["quarantined"] and "error" not in manifest["counts"]
                   and all(faulted[k] == clean[k] for k in counts))
        kinds = [k["kind"] for k in faulted["kills"]]
        result = {
            "kills": len(faulted["kills"]),
            "identical": int(a == b and bool(a)),
            "counts_add_up": int(adds_up),
            "wall_vs_clean": round(faulted["wall_s"] / clean["wall_s"], 3),
            "kills_by_kind": {k: kinds.count(k) for k in TARGETS},
            "kill_times_s": [k["at_s"] for k in faulted["kills"]],
            "units": args.units, "rows": clean["rows_in"], "files_compared": len(a),
            "differing_files": sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))[:10],
            "clean_wall_s": round(clean["wall_s"], 2), "faulted_wall_s": round(faulted["wall_s"], 2),
            "cpu": cpu_info(),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
