"""Running entry points as users do, from tests: a fresh process with its own embedded Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# A fresh local Ray per job: never attach to a cluster another process on this machine started (and no
# dashboard: pipelines.ray_setup.DASHBOARD_ENV).
JOB_ENV = {"PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local", "VOCALNET_RAY_DASHBOARD": "0"}


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 600) -> dict:
    """Run `python -m module args` in a fresh process (own Ray) and return its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **JOB_ENV, **(env or {})})
    assert proc.returncode == 0, f"{module} failed:\n{proc.stderr[-4000:]}"
    return last_json(proc.stdout)


def last_json(stdout: str) -> dict:
    """The summary a job prints last: its last stdout line that is a JSON object (a loaded box can make Ray's
    own processes print a line to the driver's stdout after it)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON summary line in stdout:\n{stdout[-2000:]}")


# What `--asr tiny.en` resolves to on a CPU: the device's default backend, on every machine and run
# (filtering.asr.resolve_spec; only `--asr-backend auto` races the backends).
TINY_EN_MODELS = ("faster-whisper:tiny.en:int8",)

# The filter job over the bundled dialogue sample, as every test that needs its output runs it.
FILTER_ARGS = ["--asr", "tiny.en", "--codec", "tiny", "--rows-per-shard", "4", "--num-cpus", "2"]


def kill_session(proc: subprocess.Popen) -> None:
    """kill -9 the job's driver and every process of its session (its embedded Ray), then wait for them."""
    import psutil

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline:
        alive = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == proc.pid:
                    alive.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        if not alive:
            return
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        time.sleep(0.2)


def visible_files(folder: Path) -> dict[str, bytes]:
    """What a reader of an output folder sees (data, quarantine, `_manifest.json`, `_run.json`) by relative path:
    the bytes an incremental run must leave equal to a fresh run's (`_progress/` and logs are bookkeeping)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not str(p.relative_to(folder)).startswith(("_progress", "logs", "."))}

