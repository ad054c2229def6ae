"""A full disk under the output folder, for real: a small tmpfs mounted for the test (root only; skipped where
this machine does not allow a mount). The job stops in one line, leaves no temporary file, and after space is
freed the same command finishes with the shards an uninterrupted run writes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.jobs import JOB_ENV, ROOT, run_module, visible_files

pytestmark = pytest.mark.slow
DISK = 512 << 10  # the 36-row sample's output takes about 200 KiB (tmpfs counts 4 KiB pages per file)
FREE = 120 << 10  # room for a few shards, then "no space left on device" mid-run
ARGS = ["--codec", "tiny", "--rows-per-shard", "4", "--batch-size", "4", "--max-duration", "8", "--num-cpus", "2"]


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"no small real filesystem here (mount -t tmpfs: {proc.stderr.strip() or proc.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob(".*.tmp-*"))


def test_a_full_disk_stops_the_job_in_one_line_and_the_same_command_finishes_once_space_is_freed(small_disk, tts_sample,
                                                                                                   tiny_codec, tmp_path):
    from tokenization.engine.local_run import run_local
    from tokenization.readers.registry import list_units
    from tokenization.schema import file_metadata
    from tokenization.tokenize_job import tokenize_job
    from tokenization.units import ReaderOptions

    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "ballast").write_bytes(b"\0" * (free - FREE))
    out = small_disk / "out"
    cmd = [sys.executable, "-m", "pipelines.tokenize", "--input", str(tts_sample), "--output", str(out), *ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **JOB_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chunks: list[tuple[float, str]] = []  # (when, text) of stderr as it arrives

    def follow() -> None:
        for chunk in iter(lambda: proc.stderr.read(64), ""):
            chunks.append((time.time(), chunk))

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    proc.wait(timeout=400)
    reader.join(timeout=10)
    stderr = "".join(c for _, c in chunks)
    assert proc.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: --output {out}: no space left on device (writing "), stderr[-3000:]
    assert "running them again" not in stderr  # no unit was rerun into the full disk
    text, failed_at, last_report = "", None, None
    for t, c in chunks:
        text += c
        if failed_at is None and "\nerror: --output" in text:
            failed_at = t
        elif failed_at is None and "row" in c:
            last_report = t  # the progress line moves when the writer reports (a shard written, or a block taken)
    assert failed_at - (last_report or failed_at) < 30, "the job should stop within seconds of the failed write"
    assert _leftovers(out) == []  # a failed write removes its temporary file

    (small_disk / "ballast").unlink()  # space freed; a killed writer's leftover waits in the folder
    killed = out / "shards" / ".shard-0000000000000000-000.parquet.tmp-4000000"
    killed.parent.mkdir(exist_ok=True)
    killed.write_bytes(b"PAR1 half a shard")
    summary = run_module("pipelines.tokenize", *cmd[3:])
    assert summary["rows_in"] == 36 == summary["kept"] and summary["shards_written"] >= 1
    assert summary["shards_written"] + summary["shards_skipped"] == 9
    assert _leftovers(out) == []  # swept at the start

    # an uninterrupted run of the same config, in process
    run_id, opts = summary["run_id"], ReaderOptions()
    job = tokenize_job(opts, tiny_codec, run_id, target_rate=tiny_codec.sample_rate, max_seconds=8.0, rows_per_shard=4, batch_size=4)
    clean = tmp_path / "clean"
    run_local(job, list_units(str(tts_sample), "jsonl", opts), str(clean), file_metadata(tiny_codec.info, {"run_id": run_id}))
    data = lambda folder: {k: v for k, v in visible_files(folder).items() if k.startswith(("shards/", "quarantine/"))}  # noqa: E731
    want, got = data(clean), data(out)
    assert len(want) == 18 and sorted(got) == sorted(want) and [k for k in want if got[k] != want[k]] == []
