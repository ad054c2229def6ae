"""The dedup job's driver sequence over a `map` function (no Ray here): `pipelines/dedup.py` backs `map` with
Ray tasks, tests and benchmarks with a loop in this process.

    list units (every Parquet file of each folder's shards/ or kept/) -> run id, `_run.json`, sync (retire
    changed and removed units' index files) -> index the pending units (tasks) -> pairs per hash part (tasks;
    only pairs with a row of a unit indexed by this run: the rest are stored in `_pairs.parquet`) -> fetch the
    paired rows (tasks) -> verify band pairs by exact Jaccard -> clusters and decisions -> `decisions/`,
    `_summary.json`.

The driver holds the unit listing, the pairs and the paired rows: never every row (duplicates are few).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filtering.dedup.decide import Node, decide, decisions_table, summarize
from filtering.dedup.index import DedupSettings, index_table
from filtering.dedup.match import EVAL_AUDIO, EXACT, NEAR, PAIRS_SCHEMA, PartUnit, fetch_rows, part_pairs, unique_pairs, unit_of
from tokenization import storage
from tokenization.dedup_schema import DECISIONS, SUMMARY, folder_name
from tokenization.dialogue_schema import TOKENIZE, detect_kind
from tokenization.engine.output_folder import (PROGRESS, Progress, UnitReport, compute_run_id, prepare_output, shard_name,
                                               sync_output, write_unit_report)
from tokenization.errors import UserError
from tokenization.fingerprint import jaccard
from tokenization.paths import list_input_files
from tokenization.schema import KEPT, SHARDS, sha1_hex, table_to_parquet_bytes
from tokenization.units import Unit

INDEX, PAIRS = "index", "_pairs.parquet"  # DEDUP/index/shard-KEY-000.parquet; the verified pairs
INPUT, EVAL = "dedup-input", "dedup-eval"  # a unit's role (its `fmt`)
FINGERPRINT_VERSION = "landmarks-1"  # `tokenization.fingerprint`'s method: another one is another index

Map = Callable[[Callable, list[tuple], str], list]  # map(fn, [args, ...], label) -> [fn(*args), ...]


def local_map(fn: Callable, args: list[tuple], label: str = "") -> list:
    return [fn(*a) for a in args]


@dataclass
class DedupOptions:
    keep: str = "first"  # first | best
    text_dups: str = "report"  # report | drop
    parts: int = 8  # hash parts of the pair search (a task each)
    tasks: int = 64  # index and fetch tasks, at most


def list_units(inputs: list[str], evals: list[str]) -> list[Unit]:
    """Every data file of each folder (`shards/` of a tokenize output, `kept/` of a filter output), inputs
    first in `--input` order, then eval folders; `Unit.fmt` is the role, `part` the folder's position."""
    units, seen = [], set()
    for role, folders in ((INPUT, inputs), (EVAL, evals)):
        for pos, folder in enumerate(folders):
            name = folder_name(folder)
            if (role, name) in seen:
                raise UserError(f"{folder} is given twice as {'--input' if role == INPUT else '--against'}")
            seen.add((role, name))
            sub = SHARDS if detect_kind(name) == TOKENIZE else KEPT
            for f in list_input_files(storage.join(name, sub), (".parquet",)):
                units.append(Unit(f.uri, role, len(units), pos, size=f.size, version=f.version,
                                  key=sha1_hex(f"{role}\n{f.uri}".encode())[:16]))
    if not any(u.fmt == INPUT for u in units):
        raise UserError(f"no data files in --input {' '.join(inputs)}")
    return units


def unit_folder(u: Unit) -> str:
    return u.uri.rsplit("/", 2)[0]


def index_uri(output: str, key: str) -> str:
    return storage.join(output, INDEX, f"{shard_name(key, 0)}.parquet")


def index_units(units: list[dict], output: str, settings: DedupSettings) -> int:
    """Task: index each unit, then its done mark and unit report (a killed run redoes only what has none)."""
    n = 0
    for d in units:
        u = Unit.from_dict(d)
        table = index_table(u.uri, settings)
        storage.write_bytes_atomic(index_uri(output, u.key), table_to_parquet_bytes(table))
        storage.write_bytes_atomic(storage.join(output, PROGRESS, f"{shard_name(u.key, 0)}.json"),
                                   json.dumps({"rows": table.num_rows}).encode())
        write_unit_report(output, UnitReport(u.key, u.uri, table.num_rows, 1, u.fingerprint))
        n += table.num_rows
    return n


def fetch_many(items: list[tuple[str, list[int]]]) -> list[pa.Table]:
    return [fetch_rows(uri, rows) for uri, rows in items]


def run_dedup(inputs: list[str], output: str, evals: list[str], settings: DedupSettings, opts: DedupOptions,
              map_fn: Map = local_map, overwrite: bool = False, label: str = "dedup") -> dict:
    """The whole job; returns the summary it wrote to `_summary.json`."""
    units = list_units(inputs, evals)
    config = {"settings": settings.to_dict(), "fingerprint": FINGERPRINT_VERSION}
    run_id = compute_run_id(config)
    prepare_output(output, run_id, config, overwrite, (INDEX,))
    progress = Progress.read(output)
    plan = sync_output(output, units, (INDEX,), progress)
    todo = progress.pending(units)
    print(f"[{label}] run {run_id}: {len(units)} units ({len(units) - len(todo)} already indexed); {plan.line()}", file=sys.stderr)
    groups = _groups([u.to_dict() for u in todo], opts.tasks)
    map_fn(index_units, [(g, output, settings) for g in groups], "index")
    progress.reload(todo)

    stored, compared = _stored_pairs(output, units, {u.key for u in todo})
    fresh = {u.key for u in units} - compared
    part_units = [PartUnit(i, index_uri(output, u.key), u.fmt == EVAL, u.key in fresh) for i, u in enumerate(units)]
    found = map_fn(part_pairs, [(part_units, p, opts.parts) for p in range(opts.parts)], "pairs") if fresh else []
    new = unique_pairs(pa.concat_tables([PAIRS_SCHEMA.empty_table(), *found]))
    nodes = _fetch(units, output, [stored, new], map_fn, opts.tasks)
    verified = _verified(new, nodes, settings.near_jaccard)
    pairs = pa.concat_tables([stored, verified])
    _store_pairs(output, units, pairs)

    decisions = decide(pairs, nodes, opts.keep, opts.text_dups)
    target = storage.join(output, DECISIONS, "decisions-000.parquet")
    storage.write_bytes_atomic(target, table_to_parquet_bytes(decisions_table(decisions)))
    for f in storage.list_files(storage.join(output, DECISIONS)):
        if f != target:
            storage.remove_if_exists(f)
    rows = sum(progress.reports[u.key].rows for u in units if u.fmt == INPUT)
    eval_rows = sum(progress.reports[u.key].rows for u in units if u.fmt == EVAL)
    summary = {"output": output, "run_id": run_id, **summarize(decisions, rows, eval_rows), "candidates_new": new.num_rows, "pairs_new": verified.num_rows,
               "units_indexed": len(todo), **plan.counts(), "keep": opts.keep, "text_dups": opts.text_dups,
               "inputs": [folder_name(f) for f in inputs], "against": [folder_name(f) for f in evals]}
    storage.write_bytes_atomic(storage.join(output, SUMMARY), json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


def _groups(items: list, n: int) -> list[list]:
    per = max(1, -(-len(items) // max(1, n)))
    return [items[i:i + per] for i in range(0, len(items), per)]


def _stored_pairs(output: str, units: list[Unit], indexed: set[str]) -> tuple[pa.Table, set[str]]:
    """The stored pairs between units compared before and not indexed again by this run (new or changed: their
    rows are compared afresh), as this listing's nodes; and the unit keys they cover. Units that are no longer
    listed drop out."""
    path = storage.join(output, PAIRS)
    if not storage.exists(path):
        return PAIRS_SCHEMA.empty_table(), set()
    with storage.open_input(path) as f:
        t = pq.read_table(f)
    covered = set(json.loads(t.schema.metadata[b"units"]))
    live = {u.key: i for i, u in enumerate(units) if u.key in covered and u.key not in indexed}
    ok = [x in live and y in live for x, y in zip(t.column("a_unit").to_pylist(), t.column("b_unit").to_pylist())]
    t = t.filter(pa.array(ok, pa.bool_()))
    a = np.array([live[k] for k in t.column("a_unit").to_pylist()], np.int64) << 32 | t.column("a_row").to_numpy().astype(np.int64)
    b = np.array([live[k] for k in t.column("b_unit").to_pylist()], np.int64) << 32 | t.column("b_row").to_numpy().astype(np.int64)
    return pa.table({"a": a, "b": b, "kind": t.column("kind"), "score": t.column("score")}, schema=PAIRS_SCHEMA), set(live)


def _store_pairs(output: str, units: list[Unit], pairs: pa.Table) -> None:
    keys = [u.key for u in units]
    a, b = pairs.column("a").to_numpy(), pairs.column("b").to_numpy()
    t = pa.table({"a_unit": [keys[i] for i in unit_of(a)], "a_row": (a & 0xFFFFFFFF).astype(np.int32),
                  "b_unit": [keys[i] for i in unit_of(b)], "b_row": (b & 0xFFFFFFFF).astype(np.int32),
                  "kind": pairs.column("kind"), "score": pairs.column("score")})
    storage.write_bytes_atomic(storage.join(output, PAIRS), table_to_parquet_bytes(t, {b"units": json.dumps(keys).encode()}))


def _fetch(units: list[Unit], output: str, tables: list[pa.Table], map_fn: Map, tasks: int) -> dict[int, Node]:
    """Every row named in the pairs, read from the index in tasks (a unit's rows in one read)."""
    wanted: dict[int, set[int]] = {}
    for t in tables:
        for col in ("a", "b"):
            v = t.column(col).to_numpy()
            for unit, row in zip(unit_of(v).tolist(), (v & 0xFFFFFFFF).tolist()):
                wanted.setdefault(unit, set()).add(row)
    order = sorted(wanted)
    items = [(index_uri(output, units[i].key), sorted(wanted[i])) for i in order]
    tables = [t for part in map_fn(fetch_many, [(g,) for g in _groups(items, tasks)], "fetch") for t in part]
    nodes: dict[int, Node] = {}
    for i, t in zip(order, tables):
        u = units[i]
        d = t.to_pydict()
        for j, row in enumerate(d["row"]):
            nodes[(i << 32) | row] = Node(d["utt_id"][j], unit_folder(u), u.uri, row, (u.fmt == EVAL, u.part, u.index, row),
                                          d["duration_s"][j] or 0.0, d["dnsmos_ovrl"][j], d["wer"][j],
                                          np.asarray(d["fp"][j], np.uint32), (d["sha_key"][j], d["codes_key"][j]))
    return nodes


def _verified(pairs: pa.Table, nodes: dict[int, Node], threshold: float) -> pa.Table:
    """Band pairs (score 0) with their exact fingerprint Jaccard, kept at `threshold` or above; one pair per
    (a, b) and kind family, exact before near."""
    a, b = pairs.column("a").to_numpy(), pairs.column("b").to_numpy()
    kinds, scores = pairs.column("kind").to_pylist(), pairs.column("score").to_numpy().copy()
    keep = np.ones(len(a), bool)
    exact = {(x, y) for x, y, k, s in zip(a.tolist(), b.tolist(), kinds, scores.tolist()) if s == 1.0 and k in (EXACT, EVAL_AUDIO)}
    seen: set[tuple] = set()
    for i, (x, y, k) in enumerate(zip(a.tolist(), b.tolist(), kinds)):
        if scores[i] == 0.0 and k in (NEAR, EVAL_AUDIO):
            if (x, y, k) in seen or (x, y) in exact or (y, x) in exact:
                keep[i] = False
                continue
            seen.add((x, y, k))
            scores[i] = jaccard(nodes[x].fp, nodes[y].fp)
            keep[i] = scores[i] >= threshold
    t = pairs.set_column(3, "score", pa.array(scores))
    return t.filter(pa.array(keep))
