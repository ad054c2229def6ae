"""The sharded-job engine without Ray: shard cutting per unit, resume, duplicate ids, counts that add up."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from tokenization.schema import QuarantineRow
from tokenization.sharded_job import (SHARDS, BadInput, JobSpec, compute_run_id, done_shards, find_duplicates, pending_units,
                                      read_batches, run_local, shard_name, write_manifest)
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
    from tokenization.sharded_job import Item, write_shard

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


def test_a_killed_writers_leftover_is_not_read_as_data(tmp_path, monkeypatch):
    """Killed between write and rename: the temp file is hidden, so a dataset read of the folder
    (pyarrow, Ray Data) does not count its rows next to the re-run's shard."""
    import os

    import pyarrow.dataset as pads

    from tokenization import storage
    from tokenization.schema import table_to_parquet_bytes

    data = table_to_parquet_bytes(pa.table({"id": ["a0"]}))

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(os, "getpid", lambda: 4_000_000)  # the killed job's writer process
    try:
        storage.write_bytes_atomic(str(tmp_path / "kept" / "shard-00000-000.parquet"), data)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    storage.write_bytes_atomic(str(tmp_path / "kept" / "shard-00000-000.parquet"), data)  # the re-run
    assert len(list((tmp_path / "kept").iterdir())) == 2  # the leftover is there...
    assert pads.dataset(str(tmp_path / "kept"), format="parquet").to_table().num_rows == 1  # ...and not read
