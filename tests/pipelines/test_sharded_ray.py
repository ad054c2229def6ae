"""The driver sequence tokenize and filter share (`run_sharded_job`), with the Ray-free `run_local` as its run."""

from __future__ import annotations

import json
import time

from pipelines.sharded_ray import RunStats, run_sharded_job
from tests.tokenization.test_engine import _corpus, _load, _Sink
from tokenization import storage
from tokenization.engine.jobs import JobSpec
from tokenization.engine.local_run import run_local
from tokenization.engine.output_folder import PROGRESS
from tokenization.engine.writer import write_manifest
from tokenization.schema import MANIFEST, SHARDS


def _drive(out: str, spec: dict) -> dict:
    units, records = _corpus(spec)
    job = JobSpec("test", lambda u: iter(records[u.uri]), str, _load, _Sink(), [], 3, 2)

    def start(run_id, progress):
        before = len(progress.done)
        return RunStats(len(run_local(job, units, out, {b"run_id": run_id.encode()}, progress)), before)

    return run_sharded_job("test", out, units, {"rows_per_shard": 3}, (SHARDS,), overwrite=False, start=start,
                           manifest_extra={}, t0=time.time())


def test_a_run_lists_progress_once_and_its_manifest_matches_a_fresh_read(tmp_path, monkeypatch, capsys):
    """On S3 each listing of `_progress/` is paged LISTs and each unit report a GET: the driver lists it once per
    run (a fresh one, and an incremental one that retires a changed unit and adds a new one) and keeps it current."""
    out = str(tmp_path / "out")
    listed, real = [], storage.list_files
    monkeypatch.setattr(storage, "list_files", lambda uri, *a, **k: listed.append(uri) or real(uri, *a, **k))
    spec = {"b": ("1", ["b0", "b1", "b2", "b3"]), "d": ("1", ["d0", "bad", "d2"])}
    for what, spec, counts in [("fresh", spec, {"units_new": 2}),
                               ("grow + change", {**spec, "a": ("1", ["a0"]), "b": ("2", ["B0"])},
                                {"units_new": 1, "units_changed": 1, "units_unchanged": 1})]:
        listed.clear()
        summary = _drive(out, spec)
        assert [u for u in listed if u.startswith(storage.join(out, PROGRESS))] == [storage.join(out, PROGRESS)], what
        assert {k: v for k, v in summary.items() if k.startswith("units_") and v} == counts, what
        written = storage.read_text(storage.join(out, MANIFEST))
        units = _corpus(spec)[0]
        assert json.loads(written) == write_manifest(out, summary["run_id"], units, (SHARDS,)), what  # re-read from disk
    assert summary["rows_in"] == summary["kept"] + summary["quarantined"] == 5
    assert capsys.readouterr().err.splitlines()[-1] == "[test] rows in 5 = kept 4 + quarantined 1"
