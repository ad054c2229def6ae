"""The sharded-job engine shared by tokenize and filter: plan units -> run steps -> write shards
atomically -> `_manifest.json` with counts that add up. No Ray here: `pipelines/sharded_ray.py`
runs the same pieces on a cluster, `run_local` runs them in one process (tests, benchmarks).

A job is a `JobSpec`: how to read a unit into records, how to load one record (task side),
the actor steps (codec, ASR), and a `Sink` that turns finished rows into output tables. The
engine owns everything else, so the two jobs differ only in their steps.

Shards derive from units: record `pos` of the unit keyed `KEY` (`Unit.key`, a hash of its path under the
input root and its range) lands in shard `shard-KEY-{pos // rows_per_shard:03d}`, so a shard's name and
bytes depend only on its unit and the config: not on the scheduling, nor on what else the input holds.

An output folder is a living dataset (`sync_output`): with the same config, a rerun over a grown,
repaired or shrunk input runs only new units and units whose fingerprint (size + etag/mtime) changed,
retires the files of units that are gone, and ends equal to a fresh run over today's input.

Output folder:
    shards/ (tokenize) or kept/ + rejects/ (filter)   one Parquet per shard; absent when it has no rows
    quarantine/shard-KEY-000.parquet                  rows of that shard that could not become rows, with reasons
    _progress/shard-KEY-000.json                      written last: the shard is done (counts, checksums)
    _progress/units/KEY.json                          a reader task read the whole unit: rows, shards, fingerprint
    _progress/ids/KEY.FP.parquet                      the unit's record ids (FP: its fingerprint's hash), for the pre-pass
    _progress/ids/duplicates.json                     the id pre-pass result (only the duplicated ids) and its listing
    _run.json                                         run_id and config, checked on rerun
    _manifest.json                                    shards, rows, checksums, counts; written last
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Protocol

import pyarrow as pa

from tokenization import storage
from tokenization.audio import BadAudio
from tokenization.errors import UserError
from tokenization.paths import nearest_existing
from tokenization.schema import (LINE_CAP, MANIFEST, QUARANTINE, QUARANTINE_SCHEMA, REJECTS, SHARDS, QuarantineRow, sha1_hex,
                                  stable_json, table_to_parquet_bytes)
from tokenization.units import Unit

PROGRESS = "_progress"
UNITS = f"{PROGRESS}/units"
DUPLICATES = f"{PROGRESS}/ids/duplicates.json"


IDS = f"{PROGRESS}/ids"
KEY_RE = r"[0-9a-f]{16}"


def shard_name(unit: str, shard: int) -> str:
    """`shard-KEY-KKK`: shard K of the unit keyed KEY (`Unit.key`)."""
    return f"shard-{unit}-{shard:03d}"


def shard_unit(path: str) -> str | None:
    """The key of the input unit a shard file was written from (`.../shard-KEY-KKK.parquet` -> KEY), else None."""
    m = re.search(rf"shard-({KEY_RE})-\d{{3,}}\.parquet$", path)
    return m.group(1) if m else None


def file_unit(path: str) -> str | None:
    """The unit key any engine file of an output folder belongs to (shard, quarantine, done mark, report, ids)."""
    m = re.search(rf"(?:shard-({KEY_RE})-\d{{3,}}\.(?:parquet|json)|/({KEY_RE})\.(?:json|[0-9a-f]+\.parquet))$", path)
    return (m.group(1) or m.group(2)) if m else None


@dataclass
class Item:
    """One input record on its way through a job (pickled between Ray stages).

    `row` is the job's payload (loaded utterance, dialogue row, token row); `audio` is transient
    (decoded samples or FLAC bytes) and never written.
    """

    unit: str  # the unit's key
    shard: int
    pos: int
    id: str = ""
    status: str = "ok"  # ok | quarantine
    stage: str = ""
    reason: str = ""
    file: str = ""
    line: str = ""
    row: Any = None
    audio: Any = None

    def quarantine(self, stage: str, reason: str, file: str = "") -> None:
        self.status, self.stage, self.reason = "quarantine", stage, reason
        self.file = file or self.file
        self.audio = None


@dataclass
class Batch:
    """Items of one shard that travel together; `shard_rows` > 0 on the shard's last batch."""

    unit: str
    shard: int
    items: list[Item]
    shard_rows: int = 0


def pack(batch: Batch) -> bytes:
    return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes) -> Batch:
    return pickle.loads(payload)


class BadInput(ValueError):
    """A record that cannot become a row; the message is the quarantine reason."""


class Sink(Protocol):
    """What a job writes: which folder a finished row goes to and how rows become a table."""

    tables: tuple[str, ...]  # data folders, e.g. ("shards",) or ("kept", "rejects")

    def route(self, row) -> str: ...

    def table(self, rows: list, sub: str) -> pa.Table: ...

    def seconds(self, row) -> float: ...

    def reject_code(self, row) -> str | None: ...


@dataclass
class JobSpec:
    """One job: its reader, loader, actor steps and sink. Everything in it is picklable.

    Args:
        read: unit -> records (`Utterance`, `DialogueSpec`, row dict ... or `QuarantineRow`), in a fixed order.
        record_id: record -> its id (dedup key).
        load: fills `item.row`/`item.audio` from `item.row` (the record); raises BadInput (-> quarantine, stage load).
        steps: factories of the actor steps (each: `list[Item] -> list[Item]`, skipping non-ok items).
    """

    name: str
    read: Callable[[Unit], Iterable]
    record_id: Callable[[Any], str]
    load: Callable[[Item], None]
    sink: Any
    steps: list["Step"] = field(default_factory=list)
    rows_per_shard: int = 50_000
    batch_size: int = 16


@dataclass
class Step:
    """An actor step: `factory()` builds the callable once per actor (loads a model)."""

    name: str
    factory: Callable[[], Callable[[list[Item]], list[Item]]]
    cpus: float = 1.0
    gpus: float = 0.0
    actors: int = 1


# --- run id, output folder ------------------------------------------------------------------------


def compute_run_id(config: dict) -> str:
    """Hash of the job config alone (codec, reader options, split, rows per shard, rules): the dataset's
    identity. The input listing is not in it: a grown or shrunk input is the same dataset, updated."""
    return sha1_hex(stable_json({"config": config}).encode())[:16]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_output_writable(output: str) -> None:
    """Fail before Ray starts when `--output` cannot be written (read-only mount, a path under a file)."""
    if output.startswith("s3://"):
        return  # checked by the first write; S3 has no local permission model to probe
    probe = nearest_existing(output)
    if not os.path.isdir(probe):
        raise UserError(f"--output {output}: {probe} is a file, not a folder; pass a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--output {output}: {probe} is not writable; pass a folder you can write to")


def prepare_output(output: str, run_id: str, config: dict, overwrite: bool = False, tables: Iterable[str] = (SHARDS,)) -> None:
    """Record the run; refuse to mix two configs in one folder (`--overwrite` clears it). Same config: the
    folder is updated in place (`sync_output`)."""
    run_file = storage.join(output, "_run.json")
    if storage.exists(run_file) and not overwrite:
        previous = json.loads(storage.read_text(run_file))
        if previous.get("run_id") != run_id:
            old, new = _flat(previous.get("config") or {}), _flat(config)
            diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            raise UserError(
                f"--output {output} holds run {previous.get('run_id')} of another config "
                f"({diff or 'the same keys, written by an older version of this job'}); "
                f"this run is {run_id}. Use another --output, or --overwrite to replace it."
            )
        return
    if overwrite:
        for sub in (*tables, QUARANTINE, PROGRESS, UNITS, IDS):
            for f in storage.list_files(storage.join(output, sub)):
                fs, path = storage.filesystem(f)
                fs.delete_file(path)
    storage.write_bytes_atomic(run_file, json.dumps({"run_id": run_id, "config": config}, indent=2, sort_keys=True).encode())


def done_shards(output: str) -> set[str]:
    return {f.rsplit("/", 1)[-1][: -len(".json")] for f in storage.list_files(storage.join(output, PROGRESS), ".json")}


@dataclass
class UnitReport:
    """What a reader task found in a unit: every record counts as one row in."""

    unit: str  # key
    uri: str
    rows: int
    shards: int
    fingerprint: str = ""


def unit_reports(output: str) -> dict[str, UnitReport]:
    reports = [UnitReport(**json.loads(storage.read_text(f))) for f in storage.list_files(storage.join(output, UNITS), ".json")]
    return {r.unit: r for r in reports}


def pending_units(output: str, units: list[Unit]) -> list[Unit]:
    """Units not read to the end yet, or with a shard that has no done mark."""
    reports, done = unit_reports(output), done_shards(output)
    out = []
    for u in units:
        r = reports.get(u.key)
        if r is None or any(shard_name(u.key, k) not in done for k in range(r.shards)):
            out.append(u)
    return out


# --- a living output folder: which units are new, changed, gone ------------------------------------


@dataclass
class SyncPlan:
    """How this run's listing differs from what the folder holds (unit keys)."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"units_new": len(self.new), "units_changed": len(self.changed), "units_removed": len(self.removed),
                "units_unchanged": len(self.unchanged)}

    def line(self) -> str:
        return (f"units: {len(self.new)} new, {len(self.changed)} changed, {len(self.removed)} removed, "
                f"{len(self.unchanged)} unchanged")


def _engine_files(output: str, tables: Iterable[str]) -> list[str]:
    """Every per-unit file of the folder, in the order a retirement deletes them: the unit's report first (the
    unit turns pending at once), then its done marks, then data and quarantine, then its id cache."""
    folders = (UNITS, PROGRESS, *tables, QUARANTINE, IDS)
    return [f for sub in folders for f in storage.list_files(storage.join(output, sub))]


def retire_units(output: str, keys: set[str], listed: set[str] | None, tables: Iterable[str]) -> int:
    """Delete every file of the units `keys` (and, with `listed`, of any unit not in it). Returns files deleted.

    Idempotent: a run killed halfway through deletes the rest next time, since leftovers still name a unit
    that is retired or not listed."""
    n = 0
    for f in _engine_files(output, tables):
        k = file_unit(f)
        if k is not None and (k in keys or (listed is not None and k not in listed)):
            storage.remove_if_exists(f)
            n += 1
    return n


def sync_output(output: str, units: list[Unit], tables: Iterable[str] = (SHARDS,)) -> SyncPlan:
    """Bring the folder to this listing before any work: classify units, retire changed and removed ones.

    A changed unit's old files go before its new ones are written, so a reader never sees both; the stale
    `_manifest.json` goes too whenever anything will change (the new one is written last)."""
    reports, plan = unit_reports(output), SyncPlan()
    listed = {u.key for u in units}
    for u in units:
        r = reports.get(u.key)
        if r is None:
            plan.new.append(u.key)
        elif r.fingerprint != u.fingerprint:
            plan.changed.append(u.key)
        else:
            plan.unchanged.append(u.key)
    plan.removed = sorted(k for k in reports if k not in listed)
    if plan.changed or plan.removed or plan.new:
        storage.remove_if_exists(storage.join(output, MANIFEST))
    retire_units(output, set(plan.changed), listed, tables)
    return plan


# --- reading a unit into batches (task side) ------------------------------------------------------


def read_batches(job: JobSpec, unit: Unit, output: str | None, done: set[str], winners: dict[str, tuple] | None = None,
                 load: bool = True) -> Iterator[Batch]:
    """Read one unit, load its records and cut them into batches of one shard each.

    Records of shards already done are read (to count and place them) but not loaded. `load=False`
    leaves loading to `load_batch` (the Ray adapter runs it as separate tasks, so one big unit still
    decodes in parallel). A duplicate
    id (an earlier occurrence in this unit, or an id the pre-pass found elsewhere: `winners` maps it
    to its kept occurrence (unit, pos, where)) is quarantined.
    Writes the unit's report once the unit was read to the end.
    """
    rps, seen, winners = job.rows_per_shard, set(), winners or {}
    pending: list[Item] = []
    pos = -1
    for pos, rec in enumerate(job.read(unit)):
        shard = pos // rps
        if pending and pending[0].shard != shard:  # the pending shard is complete: it held rps rows
            yield _flush(job, pending, shard_rows=rps, load=load)
            pending = []
        elif len(pending) >= job.batch_size:  # flushed only when the next record arrives, so the last batch knows it is last
            yield _flush(job, pending, load=load)
            pending = []
        item = _item(job, unit, shard, pos, rec, seen, winners)
        if shard_name(unit.key, shard) not in done:
            pending.append(item)
    n = pos + 1
    if pending:
        yield _flush(job, pending, shard_rows=n - pending[0].shard * rps, load=load)
    if output is None:  # a dry read (tests): no report
        return
    write_unit_report(output, UnitReport(unit.key, unit.where, n, -(-n // rps), unit.fingerprint))


def write_unit_report(output: str, report: UnitReport) -> None:
    """The unit was read to the end: its rows count in, and its shards and fingerprint are known."""
    storage.write_bytes_atomic(storage.join(output, UNITS, f"{report.unit}.json"), json.dumps(asdict(report)).encode())


def _item(job: JobSpec, unit: Unit, shard: int, pos: int, rec, seen: set[str], winners: dict[str, tuple]) -> Item:
    if isinstance(rec, QuarantineRow):
        return Item(unit.key, shard, pos, rec.utt_id, "quarantine", rec.stage, rec.reason, rec.file, rec.line)
    rid = job.record_id(rec)
    item = Item(unit.key, shard, pos, rid, row=rec, file=unit.where)
    won = winners.get(rid)
    if rid in seen:  # first: the same reason whether or not the pre-pass saw this unit's own repeats
        item.quarantine("manifest", f"duplicate id {rid!r} (kept its first occurrence in {unit.where})")
    elif won is not None and tuple(won[:2]) != (unit.key, pos):
        item.quarantine("manifest", f"duplicate id {rid!r} (kept its occurrence in {won[2]}, record {won[1]})")
    seen.add(rid)
    return item


def _flush(job: JobSpec, items: list[Item], shard_rows: int = 0, load: bool = True) -> Batch:
    batch = Batch(items[0].unit, items[0].shard, items, shard_rows)
    return load_batch(job, batch) if load else batch


def load_batch(job: JobSpec, batch: Batch) -> Batch:
    """Load every ok item of a batch (task side); a failure quarantines that item only."""
    for item in batch.items:
        if item.status != "ok":
            continue
        try:
            job.load(item)
        except (BadInput, BadAudio) as exc:
            item.quarantine("load", str(exc))  # the loader set `item.file` to what it read
    return batch


def record_ids(job: JobSpec, unit: Unit, output: str | None = None) -> Iterator[dict]:
    """{id, loc} of every record with an id (loc = listing index << 32 | pos): the input of the duplicate pre-pass.

    With `output`, the unit's ids are cached under `_progress/ids/` per fingerprint: an unchanged unit is
    never read again for a later pre-pass."""
    import pyarrow.parquet as pq

    cache = storage.join(output, IDS, f"{unit.key}.{sha1_hex(unit.fingerprint.encode())[:8]}.parquet") if output else None
    if cache and storage.exists(cache):
        with storage.open_input(cache) as f:
            t = pq.read_table(f)
        base = unit.index << 32
        yield from ({"id": i, "loc": base | p} for i, p in zip(t.column("id").to_pylist(), t.column("pos").to_pylist()))
        return
    ids, poss = [], []
    for pos, rec in enumerate(job.read(unit)):
        if not isinstance(rec, QuarantineRow):
            ids.append(job.record_id(rec))
            poss.append(pos)
    if cache:
        storage.write_bytes_atomic(cache, table_to_parquet_bytes(pa.table({"id": pa.array(ids, pa.string()),
                                                                           "pos": pa.array(poss, pa.int64())})))
    yield from ({"id": i, "loc": (unit.index << 32) | p} for i, p in zip(ids, poss))


def winners_from(duplicates: Iterable[tuple[str, int]], units: list[Unit]) -> dict[str, tuple[str, int, str]]:
    """(id, lowest loc) of each duplicated id -> {id: (unit key, pos, where)}: the occurrence that is kept."""
    by_index = {u.index: u for u in units}
    return {rid: (by_index[loc >> 32].key, loc & 0xFFFFFFFF, by_index[loc >> 32].where) for rid, loc in duplicates}


# id -> (lowest loc, count) of the duplicated ids, and of `keep` ids whatever their count (the Ray adapter: a groupby)
IdCounter = Callable[[list[Unit], set[str]], dict[str, tuple[int, int]]]
# (unit key, pos, id) of every record holding one of the ids
IdHolders = Callable[[list[Unit], set[str]], list[tuple[str, int, str]]]


def _outcome(winners: dict, rid: str, key: str, pos: int):
    w = winners.get(rid)
    return "keep" if w is None or tuple(w[:2]) == (key, pos) else tuple(w[:2])


def listing_hash(units: list[Unit]) -> str:
    return sha1_hex("\n".join(f"{u.key} {u.fingerprint}" for u in units).encode())


def duplicates_current(output: str, units: list[Unit]) -> bool:
    """Were the saved duplicate winners computed over exactly this listing?"""
    path = storage.join(output, DUPLICATES)
    return storage.exists(path) and json.loads(storage.read_text(path)).get("listing") == listing_hash(units)


def resolve_duplicates(output: str, units: list[Unit], count: IdCounter, holders: IdHolders,
                       tables: Iterable[str] = (SHARDS,)) -> tuple[dict[str, tuple], list[str]]:
    """The duplicate-id winners over this listing, and the unchanged units a new winner affects (retired here,
    so they run again). Returns (winners, affected unit keys).

    One rule whatever order units arrived in: the first occurrence in listing order wins, as in a fresh run.
    The pre-pass reads cached ids of unchanged units (`record_ids`); a second pass over the cache finds the
    holders of ids whose winner moved, and only those whose outcome changed (kept <-> quarantined, or
    quarantined naming another winner) run again."""
    keys = [u.key for u in units]
    if not all(keys) or len(set(keys)) != len(keys):  # a lister that bypassed `tokenization.units.keyed`
        raise ValueError("units need distinct keys (tokenization.units.keyed): shard names derive from them")
    path = storage.join(output, DUPLICATES)
    saved = json.loads(storage.read_text(path)) if storage.exists(path) else {}
    listing = listing_hash(units)
    old = {k: tuple(v) for k, v in saved.get("winners", {}).items()}
    if saved.get("listing") == listing:
        return old, []
    found = count(units, set(old)) if len(units) > 1 or old else {}
    every = winners_from(((rid, loc) for rid, (loc, _) in found.items()), units)
    moved = {rid for rid in set(old) | set(every) if tuple(old.get(rid, ())[:2]) != tuple(every.get(rid, ())[:2])}
    reports, affected = unit_reports(output), set()
    done = [u for u in units if u.key in reports]  # the others run anyway
    if moved and done:
        for key, pos, rid in holders(done, moved):
            if _outcome(old, rid, key, pos) != _outcome(every, rid, key, pos):
                affected.add(key)
    if affected:
        retire_units(output, affected, None, tables)
    winners = {rid: w for rid, w in every.items() if found[rid][1] > 1}
    storage.write_bytes_atomic(path, json.dumps({"listing": listing, "winners": winners}, sort_keys=True).encode())
    return winners, sorted(affected)


# --- writing shards (the writer step) -------------------------------------------------------------


@dataclass
class ShardResult:
    """What `_progress/<shard>.json` records once a shard is written."""

    name: str
    rows_in: int
    rows: dict[str, int]  # data folder -> rows
    quarantined: int
    seconds: dict[str, float]
    files: dict[str, dict] = field(default_factory=dict)  # data folder -> {"bytes", "sha1", "rows"}
    reject_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def reason_key(reason: str) -> str:
    """`/a/b.wav: file not found` -> `file not found` (counts by kind, not by file)."""
    return reason.split(": ", 1)[-1].split(" (")[0]


def quarantine_table(items: list[Item], run_id: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"utt_id": i.id, "line": i.line[:LINE_CAP], "file": i.file, "stage": i.stage, "reason": i.reason, "run_id": run_id} for i in items],
        schema=QUARANTINE_SCHEMA)


def write_quarantine(output: str, name: str, table: pa.Table) -> None:
    storage.write_bytes_atomic(storage.join(output, QUARANTINE, f"{name}.parquet"), table_to_parquet_bytes(table))


def write_shard(output: str, name: str, items: list[Item], sink, metadata: dict[bytes, bytes]) -> ShardResult:
    """Write quarantine, then the data tables (rows in input order), then the done mark, each atomically."""
    items = sorted(items, key=lambda i: i.pos)
    ok = [i.row for i in items if i.status == "ok"]
    bad = [i for i in items if i.status != "ok"]
    write_quarantine(output, name, quarantine_table(bad, metadata.get(b"run_id", b"").decode()))
    by_sub = {sub: [r for r in ok if sink.route(r) == sub] for sub in sink.tables}
    files, rows, seconds = {}, {}, {}
    for sub, sub_rows in by_sub.items():
        rows[sub], seconds[sub] = len(sub_rows), float(sum(sink.seconds(r) for r in sub_rows))
        if not sub_rows:  # no empty files: some readers (datasets) reject zero-row Parquet
            # A re-run of a shard a killed run had written (rows can route differently when ASR
            # batches differ) must not leave the old attempt's file beside the new ones.
            storage.remove_if_exists(storage.join(output, sub, f"{name}.parquet"))
            continue
        data = table_to_parquet_bytes(sink.table(sub_rows, sub), metadata)
        storage.write_bytes_atomic(storage.join(output, sub, f"{name}.parquet"), data)
        files[sub] = {"bytes": len(data), "sha1": sha1_hex(data), "rows": len(sub_rows)}
    rejects, q_reasons = {}, {}
    for r in ok:
        code = sink.reject_code(r)
        if code:
            rejects[code] = rejects.get(code, 0) + 1
    for i in bad:
        q_reasons[reason_key(i.reason)] = q_reasons.get(reason_key(i.reason), 0) + 1
    result = ShardResult(name, len(items), rows, len(bad), seconds, files, rejects, q_reasons)
    storage.write_bytes_atomic(storage.join(output, PROGRESS, f"{name}.json"), json.dumps(asdict(result)).encode())
    return result


class ShardWriter:
    """Buffers batches per shard and writes a shard once all its rows arrived (the shard's last
    batch says how many). Rows are ordered by input position, so bytes never depend on scheduling.
    """

    def __init__(self, output: str, sink, metadata: dict[bytes, bytes]):
        self.output, self.sink, self.metadata = output, sink, metadata
        self.buffers: dict[tuple[str, int], dict[int, Item]] = {}  # by position: a batch delivered twice counts once
        self.expected: dict[tuple[str, int], int] = {}

    def add(self, batch: Batch) -> list[str]:
        """Take one batch; returns the names of the shards it completed."""
        key = (batch.unit, batch.shard)
        self.buffers.setdefault(key, {}).update((i.pos, i) for i in batch.items)
        if batch.shard_rows:
            self.expected[key] = batch.shard_rows
        if key in self.expected and len(self.buffers[key]) == self.expected[key]:
            name = shard_name(*key)
            write_shard(self.output, name, list(self.buffers.pop(key).values()), self.sink, self.metadata)
            del self.expected[key]
            return [name]
        return []


# --- the manifest ---------------------------------------------------------------------------------


def load_results(output: str) -> list[ShardResult]:
    return [ShardResult(**json.loads(storage.read_text(f))) for f in storage.list_files(storage.join(output, PROGRESS), ".json")]


def _add(into: dict, more: dict) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def write_manifest(output: str, run_id: str, units: list[Unit], tables: tuple[str, ...], extra: dict | None = None) -> dict:
    """`_manifest.json`: every shard file with rows and checksum, and counts that must add up.

    Rows in are what the reader tasks counted per unit (`_progress/units`); kept, rejected and
    quarantined are what the writer reported per shard. `counts.error` says why they differ.
    """
    results, reports = load_results(output), unit_reports(output)
    kept_sub = tables[0]
    n_in = sum(reports[u.key].rows for u in units if u.key in reports)
    kept = sum(r.rows.get(kept_sub, 0) for r in results)
    rejected = sum(r.rows.get(REJECTS, 0) for r in results)
    quarantined = sum(r.quarantined for r in results)
    q_reasons, rejects = {}, {}
    for r in results:
        _add(q_reasons, r.quarantine_reasons)
        _add(rejects, r.reject_reasons)
    hours = {sub: round(sum(r.seconds.get(sub, 0.0) for r in results) / 3600, 6) for sub in tables}
    counts: dict = {"in": n_in, "kept": kept}
    if REJECTS in tables:
        counts.update(rejected=rejected, quarantined=quarantined, hours_kept=hours[kept_sub], hours_rejected=hours[REJECTS])
    else:
        counts.update(quarantined=quarantined, hours=hours[kept_sub])
    manifest = {
        "run_id": run_id,
        "shards": [{"path": f"{sub}/{r.name}.parquet", **info, "quarantined": r.quarantined,
                    "audio_seconds": round(r.seconds.get(sub, 0.0), 3)}
                   for sub in tables for r in results for s, info in r.files.items() if s == sub],
        "quarantine": [{"path": f"{QUARANTINE}/{r.name}.parquet", "rows": r.quarantined} for r in results],
        "counts": counts,
        "quarantine_reasons": dict(sorted(q_reasons.items())),
        **({"reject_reasons": dict(sorted(rejects.items()))} if REJECTS in tables else {}),
        **(extra or {}),
    }
    missing = [u.where for u in pending_units(output, units)]
    if missing:
        counts["error"] = f"{len(missing)} input units not finished (first: {missing[0]})"
    elif kept + rejected + quarantined != n_in:
        counts["error"] = (f"rows in ({n_in}) != kept ({kept})" + (f" + rejected ({rejected})" if REJECTS in tables else "")
                           + f" + quarantined ({quarantined})")
    storage.write_bytes_atomic(storage.join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
    return manifest


# --- in-process execution (tests, benchmarks): the same steps, one process --------------------------


def count_ids(job: JobSpec, units: list[Unit], output: str | None = None, keep: set[str] = frozenset()) -> dict[str, tuple[int, int]]:
    """In-process id pre-pass (the Ray adapter does it with a distributed groupby): {id: (lowest loc, count)}
    of the duplicated ids and of `keep`."""
    first: dict[str, int] = {}
    n: dict[str, int] = {}
    for unit in units:
        for r in record_ids(job, unit, output):
            first[r["id"]] = min(first.get(r["id"], r["loc"]), r["loc"])
            n[r["id"]] = n.get(r["id"], 0) + 1
    return {i: (first[i], c) for i, c in n.items() if c > 1 or i in keep}


def id_holders(job: JobSpec, units: list[Unit], ids: set[str], output: str | None = None) -> list[tuple[str, int, str]]:
    """(unit key, pos, id) of every record whose id is in `ids` (from the id cache where there is one)."""
    return [(u.key, r["loc"] & 0xFFFFFFFF, r["id"]) for u in units for r in record_ids(job, u, output) if r["id"] in ids]


def find_duplicates(job: JobSpec, units: list[Unit]) -> dict[str, tuple[str, int, str]]:
    """{id: (unit key, pos, where)} of the kept occurrence of each duplicated id (read from the input)."""
    return winners_from(((i, loc) for i, (loc, _) in count_ids(job, units).items()), units)


def run_local(job: JobSpec, units: list[Unit], output: str, metadata: dict[bytes, bytes]) -> list[str]:
    """Run a planned job in this process (no Ray): same files as the Ray adapter. Returns shards written.

    Call `sync_output` first when the folder may hold an older listing."""
    steps = [s.factory() for s in job.steps]
    writer = ShardWriter(output, job.sink, metadata)
    winners, _ = resolve_duplicates(output, units, partial(_count, job, output), partial(_holders, job, output), job.sink.tables)
    done, written = done_shards(output), []
    for unit in pending_units(output, units):
        for batch in read_batches(job, unit, output, done, winners):
            for step in steps:
                batch.items = step(batch.items)
            written += writer.add(batch)
    return written


def _count(job: JobSpec, output: str, units: list[Unit], keep: set[str]) -> dict[str, tuple[int, int]]:
    return count_ids(job, units, output, keep)


def _holders(job: JobSpec, output: str, units: list[Unit], ids: set[str]) -> list[tuple[str, int, str]]:
    return id_holders(job, units, ids, output)
