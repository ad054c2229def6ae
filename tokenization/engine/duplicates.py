"""The duplicate-id rule across units: the first occurrence in listing order wins, as in a fresh run, and
stays so across incremental runs (`resolve_duplicates`). The pre-pass reads each unit's ids once and caches
them per fingerprint under `_progress/ids/`.

Two ways to count, both given as callables by an adapter (Ray, or `local_run` in one process):
- a fresh listing, or one where many units changed: every id is counted (`IdCounter`: Ray tasks by hash part);
- a few units new or changed since the saved winners: only their ids and the old winners' ids are looked up
  in the unchanged units' cached ids (`IdScan`, an `is_in` per unit, no shuffle), so a 1 % grow costs
  about 1 % of a pre-pass plus one pass over the id caches.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable

import pyarrow as pa

from tokenization import storage
from tokenization.engine.jobs import JobSpec
from tokenization.engine.output_folder import DUPLICATES, IDS, Progress, retire_units
from tokenization.schema import SHARDS, QuarantineRow, sha1_hex, table_to_parquet_bytes
from tokenization.units import Unit


def id_table(job: JobSpec, unit: Unit, output: str | None = None) -> pa.Table:
    """`id` and `loc` (listing index << 32 | pos) of every record with an id: the input of the duplicate pre-pass.

    With `output`, the unit's ids are cached under `_progress/ids/` per fingerprint: an unchanged unit is
    never read again for a later pre-pass."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cache = storage.join(output, IDS, f"{unit.key}.{sha1_hex(unit.fingerprint.encode())[:8]}.parquet") if output else None
    if cache and storage.exists(cache):
        t = pq.read_table(pa.BufferReader(storage.read_bytes(cache)))  # one GET, retried whole
    else:
        t = storage.retrying(lambda: _read_ids(job, unit), unit.where)  # a throttled read: the unit again
        if cache:
            storage.write_bytes_atomic(cache, table_to_parquet_bytes(t))
    loc = pc.add(t.column("pos").cast(pa.int64()), pa.scalar(unit.index << 32, pa.int64()))
    return pa.table({"id": t.column("id"), "loc": loc})


def _read_ids(job: JobSpec, unit: Unit) -> pa.Table:
    ids, poss = [], []
    for pos, rec in enumerate(job.read(unit)):
        if not isinstance(rec, QuarantineRow):
            ids.append(job.record_id(rec))
            poss.append(pos)
    return pa.table({"id": pa.array(ids, pa.string()), "pos": pa.array(poss, pa.int64())})


def winners_from(duplicates: Iterable[tuple[str, int]], units: list[Unit]) -> dict[str, tuple[str, int, str]]:
    """(id, lowest loc) of each duplicated id -> {id: (unit key, pos, where)}: the occurrence that is kept."""
    by_index = {u.index: u for u in units}
    return {rid: (by_index[loc >> 32].key, loc & 0xFFFFFFFF, by_index[loc >> 32].where) for rid, loc in duplicates}


# id -> (lowest loc, count) of the duplicated ids, and of `keep` ids whatever their count (Ray: tasks by hash part)
IdCounter = Callable[[list[Unit], set[str]], dict[str, tuple[int, int]]]
# `scan_ids` over units (in tasks, for the Ray adapter): key, pos, id, loc of the records whose id is in `ids`
IdScan = Callable[[list[Unit], "pa.Array | None"], pa.Table]

FRESH_FRACTION = 0.1  # at most this share of units new or changed: the incremental count (driver memory ~ their ids)
SCAN_SCHEMA = pa.schema([("key", pa.string()), ("pos", pa.int64()), ("id", pa.string()), ("loc", pa.int64())])


def scan_ids(job: JobSpec, units: list[Unit], ids: pa.Array | None, output: str | None = None) -> pa.Table:
    """key, pos, id, loc of the units' records whose id is in `ids` (every record when None), from the id caches."""
    import pyarrow.compute as pc

    out = [SCAN_SCHEMA.empty_table()]
    for unit in units:
        t = id_table(job, unit, output)
        if ids is not None:
            t = t.filter(pc.is_in(t.column("id"), value_set=ids))
        pos = pc.bit_wise_and(t.column("loc"), pa.scalar(0xFFFFFFFF, pa.int64()))
        out.append(pa.table([pa.array([unit.key] * len(t), pa.string()), pos, t.column("id"), t.column("loc")], schema=SCAN_SCHEMA))
    return pa.concat_tables(out)


def duplicated_ids(ids: pa.Table, keep: pa.Array | None = None) -> pa.Table:
    """id, loc_min, loc_count of the ids in an id/loc table that occur more than once or are in `keep`."""
    import pyarrow.compute as pc

    g = ids.group_by("id").aggregate([("loc", "min"), ("loc", "count")])
    wanted = pc.greater(g.column("loc_count"), 1)
    if keep is not None and len(keep):
        wanted = pc.or_(wanted, pc.is_in(g.column("id"), value_set=keep))
    return g.filter(wanted)


def count_table(ids: pa.Table, keep: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """{id: (lowest loc, count)} of the ids in an id/loc table that occur more than once or are in `keep`."""
    return as_counts(duplicated_ids(ids, pa.array(sorted(keep), pa.string())))


def as_counts(groups: pa.Table) -> dict[str, tuple[int, int]]:
    cols = (groups.column(c).to_pylist() for c in ("id", "loc_min", "loc_count"))
    return {i: (loc, n) for i, loc, n in zip(*cols)}


def id_part(ids: pa.Table, parts: int, part: int) -> pa.Table:
    """The rows of an id/loc table in hash part `part` of `parts` (CRC-32 of the id): every occurrence of an id
    lands in the same part, so parts are counted independently (a distributed count without a shuffle)."""
    import zlib

    import numpy as np

    h = np.fromiter((zlib.crc32(i.encode()) % parts for i in ids.column("id").to_pylist()), np.int64, ids.num_rows)
    return ids.filter(pa.array(h == part))


def _outcome(winners: dict, rid: str, key: str, pos: int):
    w = winners.get(rid)
    return "keep" if w is None or tuple(w[:2]) == (key, pos) else tuple(w[:2])


def listing_hash(units: list[Unit]) -> str:
    return sha1_hex("\n".join(f"{u.key} {u.fingerprint}" for u in units).encode())


def duplicates_current(output: str, units: list[Unit]) -> bool:
    """Were the saved duplicate winners computed over exactly this listing?"""
    path = storage.join(output, DUPLICATES)
    return storage.exists(path) and json.loads(storage.read_text(path)).get("listing") == listing_hash(units)


def resolve_duplicates(output: str, units: list[Unit], count: IdCounter, scan: IdScan,
                       tables: Iterable[str] = (SHARDS,), progress: Progress | None = None) -> tuple[dict[str, tuple], list[str]]:
    """The duplicate-id winners over this listing, and the unchanged units a new winner affects (retired here,
    so they run again). Returns (winners, affected unit keys).

    One rule whatever order units arrived in: the first occurrence in listing order wins, as in a fresh run.
    An id's count and first occurrence change only where a unit holding it arrived, changed or left; those
    ids are the fresh units' ids and the saved winners (an id that was single and left is gone), so only they
    are counted again when few units are fresh. Holders of ids whose winner moved are found among the done
    units, and only those whose outcome changed (kept <-> quarantined, or quarantined naming another winner)
    run again. `progress` (read here when not given) forgets the affected units."""
    import pyarrow.compute as pc

    keys = [u.key for u in units]
    if not all(keys) or len(set(keys)) != len(keys):  # a lister that bypassed `tokenization.units.keyed`
        raise ValueError("units need distinct keys (tokenization.units.keyed): shard names derive from them")
    path = storage.join(output, DUPLICATES)
    saved = json.loads(storage.read_text(path)) if storage.exists(path) else {}
    listing = listing_hash(units)
    old = {k: tuple(v) for k, v in saved.get("winners", {}).items()}
    if saved.get("listing") == listing:
        return old, []
    progress = progress or Progress.read(output)
    done = {u.key for u in units if u.key in progress.reports}  # the others run anyway
    prev = saved.get("units")  # {key: fingerprint} the saved winners were counted over
    fresh = [u for u in units if prev is None or prev.get(u.key) != u.fingerprint]
    seen: pa.Table | None = None  # records of done units holding the counted ids, when the count found them
    if prev is not None and len(fresh) <= FRESH_FRACTION * len(units):
        fresh_keys = {u.key for u in fresh}
        fresh_ids = scan(fresh, None)
        asked = pc.unique(pa.concat_arrays([fresh_ids.column("id").combine_chunks().cast(pa.string()), pa.array(sorted(old), pa.string())]))
        stable = [u for u in units if u.key not in fresh_keys]
        seen = pa.concat_tables([fresh_ids, scan(stable, asked) if len(asked) else SCAN_SCHEMA.empty_table()])
        found = count_table(seen.select(["id", "loc"]), old)
    else:
        found = count(units, set(old)) if len(units) > 1 or old else {}
    every = winners_from(((rid, loc) for rid, (loc, _) in found.items()), units)
    moved = {rid for rid in set(old) | set(every) if tuple(old.get(rid, ())[:2]) != tuple(every.get(rid, ())[:2])}
    affected = set()
    if moved and done:
        moved_ids = pa.array(sorted(moved), pa.string())
        holders = scan([u for u in units if u.key in done], moved_ids) if seen is None else seen
        holders = holders.filter(pc.is_in(holders.column("id"), value_set=moved_ids))
        for key, pos, rid in zip(*(holders.column(c).to_pylist() for c in ("key", "pos", "id"))):
            if key in done and _outcome(old, rid, key, pos) != _outcome(every, rid, key, pos):
                affected.add(key)
    if affected:
        retire_units(output, affected, None, tables)  # listed afresh: the pre-pass above may have cached their ids
        progress.forget(affected)
    winners = {rid: w for rid, w in every.items() if found[rid][1] > 1}
    storage.write_bytes_atomic(path, json.dumps({"listing": listing, "units": {u.key: u.fingerprint for u in units},
                                                 "winners": winners}, sort_keys=True).encode())
    return winners, sorted(affected)
