"""Pairs from one hash part of every unit's index (task side; no Ray), and their exact Jaccard check.

A node is one row of one unit: `unit_index << 32 | row` (int64), the unit's position in the run's listing.
Each key (exact, text, band, n-gram) lands in part `key % parts`, so a part task holds 1/parts of the keys and
the driver only the pairs that come back (duplicates are few; distinct rows make none). On an incremental run
a pair comes back only when one of its rows is in a unit indexed by this run: older pairs are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenization import storage

EXACT, NEAR, TEXT, EVAL_AUDIO, EVAL_TEXT = "exact", "near", "text", "eval_audio", "eval_text"
PAIRS_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("kind", pa.string()), ("score", pa.float64())])
ALL_PAIRS_MAX = 64  # a band group up to this size yields every pair; a larger one a chain and a star


@dataclass(frozen=True)
class PartUnit:
    """A unit as a part task sees it: its index file, its role and whether this run indexed it."""

    index: int
    uri: str  # its index file
    eval: bool
    new: bool


def node(unit: int, row: np.ndarray) -> np.ndarray:
    return (np.int64(unit) << np.int64(32)) | row.astype(np.int64)


def unit_of(nodes: np.ndarray) -> np.ndarray:
    return (np.asarray(nodes, np.int64) >> np.int64(32)).astype(np.int64)


def part_pairs(units: list[PartUnit], part: int, parts: int) -> pa.Table:
    """The pairs of one hash part (`PAIRS_SCHEMA`): exact, text and eval-text pairs final (score 1.0), band pairs (`near`, `eval_audio`) to be verified (score 0)."""
    cols = {"keys": [], "text": [], "bands": [], "grams": []}
    for u in units:
        with storage.open_input(u.uri) as f:
            t = pq.read_table(f, columns=["row", "sha_key", "codes_key", "text_key", "bands", "grams"])
        rows = t.column("row").to_numpy()
        nodes = node(u.index, rows)
        for name in ("sha_key", "codes_key"):
            cols["keys"].append(_entries(t.column(name).to_numpy(), nodes, u, part, parts))
        if not u.eval:
            cols["text"].append(_entries(t.column("text_key").to_numpy(), nodes, u, part, parts))
        for name in ("bands", "grams"):
            lst = t.column(name).combine_chunks()
            parent = pc.list_parent_indices(lst).to_numpy()
            cols[name].append(_entries(lst.flatten().to_numpy(), nodes[parent], u, part, parts))
    out = []
    keys = _concat(cols["keys"])
    out += _group_pairs(keys, EXACT, EVAL_AUDIO, star=True)
    out += _group_pairs(_concat(cols["text"]), TEXT, None, star=True)
    out += _group_pairs(_concat(cols["bands"]), NEAR, EVAL_AUDIO, star=False)
    out += _gram_pairs(_concat(cols["grams"]))
    if not out:
        return PAIRS_SCHEMA.empty_table()
    a, b, kind, score = (np.concatenate([o[i] for o in out]) for i in range(4))
    return unique_pairs(pa.table({"a": a, "b": b, "kind": kind, "score": score}, schema=PAIRS_SCHEMA))


def unique_pairs(pairs: pa.Table) -> pa.Table:
    """One pair per (a, b, kind), its highest score (a band pair comes once per shared band, an exact pair once
    per exact key)."""
    if not pairs.num_rows:
        return pairs
    t = pairs.group_by(["a", "b", "kind"], use_threads=False).aggregate([("score", "max")])
    return t.rename_columns(["score" if n == "score_max" else n for n in t.column_names]).select(PAIRS_SCHEMA.names).cast(PAIRS_SCHEMA)


def _entries(keys: np.ndarray, nodes: np.ndarray, u: PartUnit, part: int, parts: int) -> tuple:
    keys = keys.astype(np.uint64)
    sel = (keys != 0) & (keys % np.uint64(parts) == part)
    n = int(sel.sum())
    return keys[sel], nodes[sel], np.full(n, u.eval), np.full(n, u.new)


def _concat(entries: list[tuple]) -> tuple:
    if not entries:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool)
    return tuple(np.concatenate([e[i] for e in entries]) for i in range(4))


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, lengths) of the runs of equal keys of length >= 2, in key order."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    if not len(k):
        return order, np.zeros(0, np.int64), np.zeros(0, np.int64)
    edge = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1], [True]]))
    starts, lengths = edge[:-1], np.diff(edge)
    return order, starts[lengths > 1], lengths[lengths > 1]


def _group_pairs(entries: tuple, kind: str, eval_kind: str | None, star: bool) -> list:
    """Pairs of rows sharing a key. Among input rows: a star from the group's first row (exact keys: equality
    is transitive) or every pair (bands: a candidate may match one member and not another); input x eval rows
    get `eval_kind`. A pair is kept when one of its rows is new."""
    keys, nodes, is_eval, new = entries
    order, starts, lengths = _runs(keys)
    a, b, kinds = [], [], []
    for s, n in zip(starts.tolist(), lengths.tolist()):
        idx = order[s:s + n]
        g_nodes, g_eval, g_new = nodes[idx], is_eval[idx], new[idx]
        ins, evs = np.flatnonzero(~g_eval), np.flatnonzero(g_eval)
        if len(ins) > 1:
            if star or len(ins) > ALL_PAIRS_MAX:
                pi = np.stack([np.full(len(ins) - 1, ins[0]), ins[1:]], 1)
                if not star:  # a chain too, so a large band group still links neighbours
                    pi = np.concatenate([pi, np.stack([ins[:-1], ins[1:]], 1)])
            else:
                ii, jj = np.triu_indices(len(ins), 1)
                pi = np.stack([ins[ii], ins[jj]], 1)
            pi = pi[g_new[pi[:, 0]] | g_new[pi[:, 1]]]
            a.append(g_nodes[pi[:, 0]]), b.append(g_nodes[pi[:, 1]]), kinds.append(np.full(len(pi), kind, object))
        if eval_kind and len(ins) and len(evs):
            pi = np.stack(np.meshgrid(ins, evs, indexing="ij"), -1).reshape(-1, 2)
            pi = pi[g_new[pi[:, 0]] | g_new[pi[:, 1]]]
            a.append(g_nodes[pi[:, 0]]), b.append(g_nodes[pi[:, 1]]), kinds.append(np.full(len(pi), eval_kind, object))
    if not a:
        return []
    a, b, kinds = np.concatenate(a), np.concatenate(b), np.concatenate(kinds)
    return [(a, b, kinds, np.full(len(a), 1.0 if star else 0.0))]  # band pairs: 0 until verified


def _gram_pairs(entries: tuple) -> list:
    """(input row, eval row) pairs that share an n-gram."""
    keys, nodes, is_eval, new = entries
    order, starts, lengths = _runs(keys)
    pairs: dict[tuple[int, int], int] = {}
    for s, n in zip(starts.tolist(), lengths.tolist()):
        idx = order[s:s + n]
        g_eval, g_new, g_nodes = is_eval[idx], new[idx], nodes[idx]
        for i in np.flatnonzero(~g_eval):
            for j in np.flatnonzero(g_eval):
                if g_new[i] or g_new[j]:
                    key = (int(g_nodes[i]), int(g_nodes[j]))
                    pairs[key] = pairs.get(key, 0) + 1
    if not pairs:
        return []
    ab = np.array(list(pairs), np.int64)
    return [(ab[:, 0], ab[:, 1], np.full(len(ab), EVAL_TEXT, object), np.ones(len(ab)))]  # a shared n-gram: a match


def fetch_rows(uri: str, rows: list[int]) -> pa.Table:
    """The index rows `rows` of one unit's index file, without its keys (task side): what deciding reads."""
    with storage.open_input(uri) as f:
        t = pq.read_table(f, columns=["row", "utt_id", "duration_s", "dnsmos_ovrl", "wer", "sha_key", "codes_key", "fp"])
    return t.take(pa.array(sorted(set(rows)), pa.int64())) if rows else t.slice(0, 0)
