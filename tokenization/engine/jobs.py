"""Engine job types and the task side of a run: a `JobSpec` (reader, loader, actor steps, sink), the
`Item`s and `Batch`es that travel between stages, and reading one unit into batches of one shard each.
"""

from __future__ import annotations

import copy
import pickle
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import pyarrow as pa

from tokenization import storage
from tokenization.audio import BadAudio
from tokenization.engine.output_folder import UnitReport, shard_name, write_unit_report
from tokenization.schema import QuarantineRow
from tokenization.units import Unit


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


BLOCK_ROWS = 1024  # rows per Ray Data block at most (`--block-rows`)
BLOCK_BYTES = 16 << 20  # loaded audio per Ray Data block, at most (about 16 rows of 10 s clips at 24 kHz)


def pack(batches: list[Batch]) -> bytes:
    """A block's batches as one payload: Ray stages move blocks of many batches, since each block costs Ray
    Data milliseconds of scheduling whatever its size."""
    return pickle.dumps(batches, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes) -> list[Batch]:
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


# --- reading a unit into batches (task side) ------------------------------------------------------


def read_batches(job: JobSpec, unit: Unit, output: str | None, done: set[str],
                 winners: dict[str, tuple] | None = None) -> Iterator[Batch]:
    """Read one unit, load its records and cut them into batches of one shard each.

    Records of shards already done are read (to count and place them) but not loaded. A duplicate
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
            yield _loaded(job, pending, rps)
            pending = []
        elif len(pending) >= job.batch_size:  # flushed only when the next record arrives, so the last batch knows it is last
            yield _loaded(job, pending)
            pending = []
        item = _item(job, unit, shard, pos, rec, seen, winners)
        if shard_name(unit.key, shard) not in done:
            pending.append(item)
    n = pos + 1
    if pending:
        yield _loaded(job, pending, n - pending[0].shard * rps)
    if output is None:  # a dry read (tests): no report
        return
    write_unit_report(output, UnitReport(unit.key, unit.where, n, -(-n // rps), unit.fingerprint))


def read_batches_retrying(job: JobSpec, unit: Unit, output: str | None, done: set[str],
                           winners: dict[str, tuple] | None = None) -> Iterator[Batch]:
    """`read_batches`, read again from the start after a transient storage error that outlasted the per-call
    retries (a tar stream throttled halfway): `VOCALNET_STORAGE_RETRIES` times, each counted
    (`storage.retries`). Shards whose last batch already went out are skipped; the others' batches come
    again, which the writer takes once (it keeps one item per position). A permanent error raises
    `storage.StorageError` naming the unit."""
    sent: set[str] = set()
    limit = storage.retry_limit()
    for retry in range(limit + 1):
        try:
            for b in read_batches(job, unit, output, done | sent, winners):
                yield b
                if b.shard_rows:
                    sent.add(shard_name(b.unit, b.shard))
            return
        except OSError as exc:
            reason = storage.permanent_reason(exc) or ("not found" if isinstance(exc, FileNotFoundError) else None)
            if reason:
                raise storage.StorageError(unit.where, f"{reason} ({exc})") from exc
            if retry == limit or not storage.is_transient(exc):
                raise
        storage.count_retry()
        time.sleep(storage.backoff_s(retry))


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


def _loaded(job: JobSpec, items: list[Item], shard_rows: int = 0) -> Batch:
    """A batch of one shard's items (`shard_rows`: the shard's size, given with its last batch), every ok item
    loaded (task side); a failure quarantines that item only."""
    for item in items:
        if item.status != "ok":
            continue
        try:
            _load(job, item)
        except (BadInput, BadAudio) as exc:
            item.quarantine("load", str(exc))  # the loader set `item.file` to what it read
    return Batch(items[0].unit, items[0].shard, items, shard_rows)


def _load(job: JobSpec, item: Item) -> None:
    """`job.load(item)`, again after a transient storage error (`storage.retrying`): a throttled read is not
    bad input. Each try starts from the record, since a loader replaces `item.row`."""
    record, file = copy.copy(item.row), item.file

    def attempt() -> None:
        item.row, item.file, item.audio = copy.copy(record), file, None
        job.load(item)

    storage.retrying(attempt, item.file)
