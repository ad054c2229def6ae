"""Verified pairs -> clusters (connected components) -> one decision per row that is in one (driver side; no Ray).

A cluster joins rows by the same audio (exact or near) and by the same transcript. Its keeper is the first
row in input order (`--keep first`) or the best (`--keep best`: highest `dnsmos_ovrl`, else lowest `wer`,
else first); rows that leak into an eval set never keep. Inside a cluster each audio group (rows joined by
audio alone) keeps one row: the keeper's group drops the rest as `exact_audio` / `near_audio`; another
group's own best row is the same script by another voice (`text_only`: kept unless `--text-dups drop`) and
its other rows drop as audio copies of it. A row that matches an eval row is dropped as `eval_overlap` and
names that eval row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filtering.dedup.match import EVAL_AUDIO, EVAL_TEXT, EXACT, NEAR, TEXT
from tokenization.dedup_schema import DECISIONS_SCHEMA, EVAL_OVERLAP, EXACT_AUDIO, NEAR_AUDIO, TEXT_ONLY



@dataclass
class Node:
    """What deciding knows of one row (fetched for the rows in pairs only)."""

    utt_id: str
    folder: str
    file: str
    row: int
    rank: tuple  # input order: (folder's --input position, unit listing position, row)
    duration_s: float
    dnsmos_ovrl: float | None
    wer: float | None
    fp: np.ndarray
    exact: tuple  # (sha_key, codes_key)


class _Union:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        p = self.parent.setdefault(x, x)
        while p != self.parent[p]:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        self.parent[x] = p
        return p

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return out


def decide(pairs: pa.Table, nodes: dict[int, Node], keep: str = "first", text_dups: str = "report") -> list[dict]:
    """Decision rows (`DECISIONS_SCHEMA` dicts) of every row in a verified pair, in input order.

    Args:
        pairs: verified pairs (`filtering.dedup.match.PAIRS_SCHEMA`; eval pairs have the eval row as `b`).
        nodes: every node named in `pairs`.
        keep: "first" or "best". text_dups: "report" (text_only rows kept) or "drop".
    """
    a, b = pairs.column("a").to_numpy(), pairs.column("b").to_numpy()
    kinds, scores = pairs.column("kind").to_pylist(), pairs.column("score").to_numpy()
    everything, audio = _Union(), _Union()
    leak: dict[int, tuple[float, int]] = {}  # input node -> (score, eval node), the best eval match
    for x, y, k, s in zip(a.tolist(), b.tolist(), kinds, scores.tolist()):
        if k in (EVAL_AUDIO, EVAL_TEXT):
            sc = s if k == EVAL_AUDIO else 1.0  # a shared n-gram is a match: 1.0
            if x not in leak or sc > leak[x][0]:
                leak[x] = (sc, y)
            continue
        everything.union(x, y)
        if k in (EXACT, NEAR):
            audio.union(x, y)
    rank = (lambda n: nodes[n].rank) if keep == "first" else (lambda n: _best(nodes[n]))
    out: list[dict] = []
    clustered = set()
    for cid, (_, members) in enumerate(sorted(everything.groups().items(), key=lambda g: min(nodes[m].rank for m in g[1]))):
        clustered.update(members)
        subs: dict[int, list[int]] = {}
        for m in members:
            subs.setdefault(audio.find(m), []).append(m)
        keepable = [m for m in members if m not in leak]
        keeper = min(keepable, key=rank) if keepable else None
        for sub in subs.values():
            rep = keeper if keeper in sub else min([m for m in sub if m not in leak] or sub, key=rank)
            for m in sub:
                if m in leak:
                    out.append(_leak_row(m, nodes, leak[m], cid, len(members)))
                elif m == keeper:
                    out.append(_row(nodes[m], cid, len(members), True, "", 1.0, None))
                elif m == rep:  # another audio group's best: the same script, another recording
                    out.append(_row(nodes[m], cid, len(members), text_dups != "drop", TEXT_ONLY, 1.0, nodes[keeper] if keeper else None))
                else:
                    reason, score = _audio_reason(nodes[m], nodes[rep])
                    out.append(_row(nodes[m], cid, len(members), False, reason, score, nodes[rep]))
    n_clusters = len(everything.groups())
    for i, m in enumerate(sorted((m for m in leak if m not in clustered), key=lambda m: nodes[m].rank)):
        out.append(_leak_row(m, nodes, leak[m], n_clusters + i, 1))
    return sorted(out, key=lambda r: (r["cluster_id"], not r["keep"] or r["reason"] != "", r["file"], r["row"]))


def _best(n: Node) -> tuple:
    """`--keep best`: highest DNSMOS, else lowest WER, else first."""
    return (-(n.dnsmos_ovrl if n.dnsmos_ovrl is not None else -np.inf), n.wer if n.wer is not None else np.inf, n.rank)


def _audio_reason(m: Node, rep: Node) -> tuple[str, float]:
    if any(x and x == y for x, y in zip(m.exact, rep.exact)):
        return EXACT_AUDIO, 1.0
    inter = len(np.intersect1d(m.fp, rep.fp, assume_unique=True))
    union = len(m.fp) + len(rep.fp) - inter
    return NEAR_AUDIO, inter / union if union else 0.0  # below the threshold when joined through another row


def _leak_row(m: int, nodes: dict[int, Node], hit: tuple[float, int], cid: int, size: int) -> dict:
    return _row(nodes[m], cid, size, False, EVAL_OVERLAP, hit[0], nodes[hit[1]])


def _row(n: Node, cid: int, size: int, keep: bool, reason: str, score: float, matched: Node | None) -> dict:
    return {"utt_id": n.utt_id, "folder": n.folder, "cluster_id": cid, "cluster_size": size, "keep": keep, "reason": reason,
            "score": float(score), "matched_utt_id": matched.utt_id if matched else "",
            "matched_folder": matched.folder if matched else "", "duration_s": float(n.duration_s), "file": n.file,
            "row": n.row}


def summarize(decisions: list[dict], rows: int, eval_rows: int) -> dict:
    """The `_summary.json` counts of a run's decisions."""
    dropped: dict[str, dict[str, int]] = {}
    hours: dict[str, dict[str, float]] = {}
    reported: dict[str, int] = {}
    for d in decisions:
        if d["reason"] and not d["keep"]:
            by = dropped.setdefault(d["folder"], {})
            by[d["reason"]] = by.get(d["reason"], 0) + 1
            h = hours.setdefault(d["folder"], {})
            h[d["reason"]] = h.get(d["reason"], 0.0) + d["duration_s"] / 3600
        elif d["reason"] == TEXT_ONLY:
            reported[d["folder"]] = reported.get(d["folder"], 0) + 1
    return {
        "rows": rows, "eval_rows": eval_rows, "rows_in_clusters": len(decisions),
        "clusters": len({d["cluster_id"] for d in decisions if d["cluster_size"] > 1}),
        "dropped_rows": sum(sum(v.values()) for v in dropped.values()),
        "dropped_rows_by_source": dropped,
        "dropped_hours_by_source": {f: {k: round(v, 6) for k, v in h.items()} for f, h in hours.items()},
        "text_only_kept_by_source": reported,
        "eval_overlap_rows": sum(1 for d in decisions if d["reason"] == EVAL_OVERLAP),
    }


def decisions_table(decisions: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(decisions, schema=DECISIONS_SCHEMA)
