"""The duplicate-id rule across units: the first occurrence in listing order wins, as in a fresh run, and
stays so across incremental runs (`resolve_duplicates`). The pre-pass reads each unit's ids once and caches
them per fingerprint under `_progress/ids/`; the counting itself is a callable (a Ray groupby, or
`local_run.count_ids` in one process).
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from tokenization import storage
from tokenization.engine.jobs import JobSpec
from tokenization.engine.output_folder import DUPLICATES, IDS, Progress, retire_units
from tokenization.schema import SHARDS, QuarantineRow, sha1_hex, table_to_parquet_bytes
from tokenization.units import Unit


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
                       tables: Iterable[str] = (SHARDS,), progress: Progress | None = None) -> tuple[dict[str, tuple], list[str]]:
    """The duplicate-id winners over this listing, and the unchanged units a new winner affects (retired here,
    so they run again). Returns (winners, affected unit keys).

    One rule whatever order units arrived in: the first occurrence in listing order wins, as in a fresh run.
    The pre-pass reads cached ids of unchanged units (`record_ids`); a second pass over the cache finds the
    holders of ids whose winner moved, and only those whose outcome changed (kept <-> quarantined, or
    quarantined naming another winner) run again. `progress` (read here when not given) forgets the affected units."""
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
    progress = progress or Progress.read(output)
    reports, affected = progress.reports, set()
    done = [u for u in units if u.key in reports]  # the others run anyway
    if moved and done:
        for key, pos, rid in holders(done, moved):
            if _outcome(old, rid, key, pos) != _outcome(every, rid, key, pos):
                affected.add(key)
    if affected:
        retire_units(output, affected, None, tables)  # listed afresh: the pre-pass above may have cached their ids
        progress.forget(affected)
    winners = {rid: w for rid, w in every.items() if found[rid][1] > 1}
    storage.write_bytes_atomic(path, json.dumps({"listing": listing, "winners": winners}, sort_keys=True).encode())
    return winners, sorted(affected)
