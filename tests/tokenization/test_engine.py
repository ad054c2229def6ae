"""The sharded-job engine without Ray: shard cutting per unit, resume, duplicate ids, counts that add up."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from tests.jobs import visible_files
from tokenization.engine.jobs import BadInput, JobSpec, read_batches
from tokenization.engine.local_run import find_duplicates, run_local
from tokenization.engine.output_folder import compute_run_id, done_shards, pending_units, shard_name
from tokenization.engine.writer import write_manifest
from tokenization.schema import SHARDS, QuarantineRow
from tokenization.units import Unit, keyed

# unit uri -> records: ids (a "bad" id fails to load), or a QuarantineRow from the reader
INPUT = {
    "a": ["a0", "a1", QuarantineRow("", "{broken", "a", "manifest", "a:3: malformed JSON line"), "a3", "bad", "a5", "a6"],
    "b": ["b0", "a1", "b2", "b2"],  # a1 repeats unit a's; b2 repeats itself
}


def _read(unit: Unit):
    yield from INPUT[unit.uri]


def _load(item) -> None:
    if item.row == "bad":
        raise BadInput(f"{item.row}: not readable as audio")
    item.row = {"id": item.row, "seconds": 1.5}


@dataclass
class _Sink:
    tables: tuple = (SHARDS,)

    def route(self, row):
        return SHARDS

    def seconds(self, row):
        return row["seconds"]

    def reject_code(self, row):
        return None

    def table(self, rows, sub):
        return pa.table({"id": [r["id"] for r in rows]})


def _job(rps: int = 3, batch: int = 2) -> JobSpec:
    return JobSpec("test", _read, str, _load, _Sink(), [], rps, batch)


UNITS = keyed([Unit("a", "test", size=7, version="1"), Unit("b", "test", size=4, version="1")], "")
KA, KB = UNITS[0].key, UNITS[1].key


def test_units_cut_into_numbered_shards_with_the_last_batch_marked():
    batches = list(read_batches(_job(), UNITS[0], None, set()))
    assert [(b.shard, [i.pos for i in b.items], b.shard_rows) for b in batches] == [
        (0, [0, 1], 0), (0, [2], 3), (1, [3, 4], 0), (1, [5], 3), (2, [6], 1)]
    items = {i.pos: i for b in batches for i in b.items}
    assert items[2].status == "quarantine" and items[2].stage == "manifest" and items[2].line == "{broken"
    assert items[4].status == "quarantine" and items[4].stage == "load" and "not readable" in items[4].reason
    skipped = list(read_batches(_job(), UNITS[0], None, {shard_name(KA, 1)}))  # resume: a done shard is read, not loaded
    assert [b.shard for b in skipped] == [0, 0, 2] and skipped[-1].items[0].pos == 6


def test_duplicates_keep_the_lowest_unit_and_position():
    winners = find_duplicates(_job(), UNITS)
    assert winners == {"a1": (KA, 1, "a"), "b2": (KB, 2, "b")}
    items = [i for b in read_batches(_job(), UNITS[1], None, set(), winners) for i in b.items]
    assert [i.status for i in items] == ["ok", "quarantine", "ok", "quarantine"]
    assert "duplicate id 'a1'" in items[1].reason and "kept its occurrence in a, record 1" in items[1].reason


def test_run_local_writes_every_shard_and_counts_add_up(tmp_path):
    out = str(tmp_path / "out")
    written = run_local(_job(), UNITS, out, {b"run_id": b"r1"})
    assert written == [shard_name(KA, k) for k in range(3)] + [shard_name(KB, k) for k in range(2)]
    assert pq.read_table(tmp_path / "out" / SHARDS).column("id").to_pylist() == ["a0", "a1", "a3", "a5", "a6", "b0", "b2"]
    m = write_manifest(out, "r1", UNITS, (SHARDS,))
    assert m["counts"] == {"in": 11, "kept": 7, "quarantined": 4, "hours": round(7 * 1.5 / 3600, 6)}
    assert m["quarantine_reasons"] == {"duplicate id 'a1'": 1, "duplicate id 'b2'": 1, "malformed JSON line": 1,
                                       "not readable as audio": 1}
    assert not pending_units(out, UNITS) and run_local(_job(), UNITS, out, {b"run_id": b"r1"}) == []  # rerun: nothing to do

    (tmp_path / "out" / "_progress" / f"{shard_name(KA, 1)}.json").unlink()  # a shard a killed writer never finished
    assert pending_units(out, UNITS) == [UNITS[0]]
    m = write_manifest(out, "r1", UNITS, (SHARDS,))
    assert "1 input units not finished" in m["counts"]["error"]
    before = (tmp_path / "out" / SHARDS / f"{shard_name(KA, 1)}.parquet").read_bytes()
    assert run_local(_job(), UNITS, out, {b"run_id": b"r1"}) == [shard_name(KA, 1)]
    assert (tmp_path / "out" / SHARDS / f"{shard_name(KA, 1)}.parquet").read_bytes() == before
    assert "error" not in write_manifest(out, "r1", UNITS, (SHARDS,))["counts"]
    assert done_shards(out) == set(written)


def test_run_id_is_the_config_and_unit_keys_are_paths_under_the_root():
    assert compute_run_id({"k": 1}) == compute_run_id({"k": 1}) != compute_run_id({"k": 2})
    here = keyed([Unit("/data/x/a.tar", "test", size=1), Unit("/data/x/b.tar", "test")], "/data/x")
    moved = keyed([Unit("s3://b/y/0.tar", "test"), Unit("s3://b/y/b.tar", "test", size=9, version="2")], "s3://b/y")
    assert here[1].key == moved[1].key != here[0].key  # same path under the root, whatever the position or version
    assert len({u.key for u in keyed([Unit("m", "t", part=k, start=k, stop=k + 1) for k in range(3)], "")}) == 3


def test_a_rerun_shard_leaves_no_file_of_the_killed_attempt(tmp_path):
    """A killed run wrote shard X's row to `rejects`; the re-run routes it to `kept` (ASR batches
    can differ between runs): `rejects/X` must go, or the row would be counted twice."""
    from tokenization.engine.jobs import Item
    from tokenization.engine.writer import write_shard

    class Routed(_Sink):
        tables = ("kept", "rejects")

        def __init__(self, to: str):
            self.to = to

        def route(self, row):
            return self.to

    out, name = str(tmp_path / "out"), shard_name(KA, 0)
    items = lambda: [Item(unit=KA, shard=0, pos=0, row={"id": "a0", "seconds": 1.0})]  # noqa: E731
    write_shard(out, name, items(), Routed("rejects"), {})
    assert (tmp_path / "out" / "rejects" / f"{name}.parquet").exists()
    write_shard(out, name, items(), Routed("kept"), {})
    assert (tmp_path / "out" / "kept" / f"{name}.parquet").exists()
    assert not (tmp_path / "out" / "rejects" / f"{name}.parquet").exists()


def test_a_killed_writers_leftover_is_not_read_as_data_and_the_next_run_sweeps_it(tmp_path):
    """Killed between write and rename (SIGKILL: no cleanup runs): the temp file is hidden, so a dataset read of
    the folder (pyarrow, Ray Data) does not count its rows next to the re-run's shard; a run sweeps it first."""
    import pyarrow.dataset as pads

    from tokenization import storage
    from tokenization.schema import table_to_parquet_bytes

    data = table_to_parquet_bytes(pa.table({"id": ["a0"]}))
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / ".shard-00000-000.parquet.tmp-4000000").write_bytes(data[:20])  # the killed writer's
    storage.write_bytes_atomic(str(tmp_path / "kept" / "shard-00000-000.parquet"), data)  # the re-run
    assert len(list((tmp_path / "kept").iterdir())) == 2  # the leftover is there...
    assert pads.dataset(str(tmp_path / "kept"), format="parquet").to_table().num_rows == 1  # ...and not read
    assert storage.sweep_temp_files(str(tmp_path)) == 1
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["shard-00000-000.parquet"]


def test_a_failed_write_removes_its_temp_file_and_names_the_cause(tmp_path, monkeypatch):
    """A write that fails for good (here: the disk is full when the file is renamed into place) raises a
    `StorageError` naming the file and the cause, after one try, and leaves no temporary file."""
    import errno
    import os

    import pytest

    from tokenization import storage

    calls = []

    def full(*args):
        calls.append(args)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    target = tmp_path / "kept" / "shard-00000-000.parquet"
    with pytest.raises(storage.StorageError, match=r"shard-00000-000\.parquet: no space left on device") as info:
        storage.write_bytes_atomic(str(target), b"data")
    assert info.value.uri == str(target) and len(calls) == 1  # permanent: not retried
    assert list((tmp_path / "kept").iterdir()) == []


# --- a living output folder: grow / change / remove, each equal to a fresh run --------------------


def _corpus(spec: dict[str, tuple[str, list]]) -> tuple[list[Unit], dict]:
    """{uri: (version, records)} -> (keyed units in listing order, the records each reads)."""
    units = keyed([Unit(uri, "test", size=len(recs), version=v) for uri, (v, recs) in sorted(spec.items())], "")
    return units, {uri: recs for uri, (_, recs) in spec.items()}


def _run_into(out, spec: dict) -> tuple:
    from tokenization.engine.output_folder import sync_output

    units, records = _corpus(spec)
    job = JobSpec("test", lambda u: iter(records[u.uri]), str, _load, _Sink(), [], 3, 2)
    plan = sync_output(str(out), units)
    written = run_local(job, units, str(out), {b"run_id": b"r1"})
    manifest = write_manifest(str(out), "r1", units, (SHARDS,))
    return plan, written, manifest


def test_grow_change_remove_redo_only_that_unit_and_match_a_fresh_run(tmp_path):
    out = tmp_path / "living"
    spec = {"b": ("1", ["b0", "b1", "b2", "b3"]), "d": ("1", ["d0", "bad", "d2"])}
    _run_into(out, spec)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / SHARDS).iterdir()}
    steps = [
        ("grow", {**spec, "a": ("1", ["a0", "a1"])}, {"units_new": 1, "units_unchanged": 2}),  # sorts first
        ("change", {**spec, "a": ("1", ["a0", "a1"]), "b": ("2", ["B0"])}, {"units_changed": 1, "units_unchanged": 2}),
        ("remove", {"a": ("1", ["a0", "a1"]), "b": ("2", ["B0"])}, {"units_removed": 1, "units_unchanged": 2}),
    ]
    for what, spec, counts in steps:
        plan, written, manifest = _run_into(out, spec)
        expect = {"units_new": 0, "units_changed": 0, "units_removed": 0, "units_unchanged": 0, **counts}
        assert plan.counts() == expect, what
        fresh = tmp_path / f"fresh-{what}"
        _run_into(fresh, spec)
        assert visible_files(out) == visible_files(fresh), what
        assert {w.rsplit("-", 1)[0] for w in written} == {f"shard-{k}" for k in plan.new + plan.changed}, what
        for p in (out / SHARDS).iterdir():  # untouched shards keep their bytes and their mtime
            if p.name in mtimes and p.name.split("-")[1] in plan.unchanged:
                assert p.stat().st_mtime_ns == mtimes[p.name], (what, p.name)
        mtimes = {p.name: p.stat().st_mtime_ns for p in (out / SHARDS).iterdir()}
    assert manifest["counts"] == {"in": 3, "kept": 3, "quarantined": 0, "hours": round(3 * 1.5 / 3600, 6)}


def test_a_new_unit_that_takes_a_duplicate_id_reruns_the_unit_that_lost_it(tmp_path):
    out = tmp_path / "living"
    spec = {"b": ("1", ["x", "b1"]), "c": ("1", ["c0"])}
    _run_into(out, spec)
    plan, written, _ = _run_into(out, {**spec, "a": ("1", ["x"])})  # a sorts first: its x wins now
    kb = _corpus(spec)[0][0].key
    assert plan.counts()["units_new"] == 1 and any(w.startswith(f"shard-{kb}") for w in written)
    q = pq.read_table(out / "quarantine" / f"{shard_name(kb, 0)}.parquet").to_pylist()
    assert [r["utt_id"] for r in q] == ["x"] and "kept its occurrence in a, record 0" in q[0]["reason"]
    fresh = tmp_path / "fresh"
    _run_into(fresh, {**spec, "a": ("1", ["x"])})
    assert visible_files(out) == visible_files(fresh)
    plan, written, _ = _run_into(out, spec)  # a is gone again: b keeps x
    assert plan.counts()["units_removed"] == 1 and any(w.startswith(f"shard-{kb}") for w in written)
    assert sorted(pq.read_table(out / SHARDS).column("id").to_pylist()) == ["b1", "c0", "x"]
    assert _run_into(out, spec)[1] == []  # nothing changed: nothing runs


def test_another_config_is_refused_in_one_line_naming_the_key(tmp_path):
    import pytest

    from tokenization.engine.output_folder import prepare_output
    from tokenization.errors import UserError

    out = str(tmp_path / "out")
    prepare_output(out, compute_run_id({"rows_per_shard": 4}), {"rows_per_shard": 4})
    prepare_output(out, compute_run_id({"rows_per_shard": 4}), {"rows_per_shard": 4})  # same config: fine
    with pytest.raises(UserError) as err:
        prepare_output(out, compute_run_id({"rows_per_shard": 8}), {"rows_per_shard": 8})
    assert "\n" not in str(err.value) and "rows_per_shard 4 -> 8" in str(err.value) and "--overwrite" in str(err.value)


KILLABLE = """
import json, sys, time
from tests.tokenization import test_engine as t
real = t._load
def slow(item):
    time.sleep(0.2)
    real(item)
t._load = slow
t._run_into(sys.argv[2], {k: tuple(v) for k, v in json.load(open(sys.argv[1])).items()})
"""


def test_kill9_during_an_incremental_run_resumes_to_the_fresh_runs_folder(tmp_path):
    """SIGKILL while an incremental run writes a changed unit and a new one: no manifest is left claiming the old
    state, every visible shard is whole, and the rerun ends equal to a fresh run over today's input."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "living"
    _run_into(out, {"b": ("1", ["b0", "b1", "b2", "b3"]), "d": ("1", ["d0", "d1", "d2"])})
    today = {"a": ("1", ["a0", "a1", "a2", "a3", "a4", "a5"]), "b": ("2", ["B0", "B1", "B2", "B3", "B4"])}  # grow, change, remove d
    (tmp_path / "today.json").write_text(json.dumps(today))
    marks = lambda: {p.name for p in (out / "_progress").glob("*.json")}  # noqa: E731
    initial = marks()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tmp_path / "today.json"), str(out)], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    deadline = time.time() + 60
    while time.time() < deadline and not (marks() - initial) and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marks() - initial and not (out / "_manifest.json").exists(), "killed after a new shard, before the end"
    for p in (out / SHARDS).glob("*.parquet"):
        pq.read_metadata(p)  # whole files only
    plan, written, manifest = _run_into(out, today)
    assert written and "error" not in manifest["counts"] and plan.counts()["units_removed"] == 0  # d was retired before
    fresh = tmp_path / "fresh"
    _run_into(fresh, today)
    assert visible_files(out) == visible_files(fresh)


def test_incremental_duplicate_count_matches_a_fresh_run_over_random_grow_change_remove(tmp_path, monkeypatch):
    """The incremental pre-pass (only new and changed units' ids and the saved winners counted again) against the
    full count of a fresh run, over random edits to a corpus whose ids repeat within and across units."""
    import random

    from tokenization.engine import duplicates

    monkeypatch.setattr(duplicates, "FRESH_FRACTION", 1.0)  # incremental whenever winners were saved
    rng = random.Random(7)
    pool = [f"x{i}" for i in range(12)]
    recs = lambda: [rng.choice(pool) for _ in range(rng.randint(1, 5))]  # noqa: E731
    spec = {u: ("0", recs()) for u in "bdfh"}
    out = tmp_path / "living"
    _run_into(out, spec)
    for step in range(12):
        spec = dict(spec)
        for _ in range(rng.randint(1, 2)):
            what, uri = rng.choice(["grow", "change", "remove"]), rng.choice("abcdefghij")
            if what == "remove" and len(spec) > 1:
                spec.pop(uri, None)
            elif what == "change" and uri in spec:
                spec[uri] = (str(int(spec[uri][0]) + 1), recs())
            elif uri not in spec:
                spec[uri] = ("0", recs())
        plan, _, manifest = _run_into(out, spec)
        fresh = tmp_path / f"fresh-{step}"
        _run_into(fresh, spec)
        assert "error" not in manifest["counts"], step
        assert visible_files(out) == visible_files(fresh), (step, spec)
