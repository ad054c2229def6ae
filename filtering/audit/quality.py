"""Quality metadata the input carried (the shards' `meta` JSON column, e.g. Emilia's `dnsmos`).

Shows each numeric key's distribution per source and its relation to WER: if low DNSMOS goes
with high WER, a DNSMOS cut could replace part of the ASR pass, and the other way round.

    >>> quality_meta(facts)["keys"]["dnsmos"]["by_source"]["emilia"]["p50"]
    3.21
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from filtering.audit.figure import plt, png
from filtering.audit.read import RowFact
from filtering.audit.stats import summary


def _numeric(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _gather(facts: list[RowFact]) -> tuple[dict, dict, int]:
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    n = 0
    for f in facts:
        if not f.meta:
            continue
        n += 1
        for k, v in f.meta.items():
            x = _numeric(v)
            if x is None:
                continue
            values[k][f.source or "(none)"].append(x)
            if f.wer is not None:
                pairs[k].append((x, float(f.wer)))
    return values, pairs, n


def quality_meta(facts: list[RowFact]) -> dict:
    """Per numeric `meta` key: rows carrying it, summary per source, Pearson r with WER.

    Returns:
        {"n_rows_with_meta", "keys": {key: {"n", "by_source": {source: summary}, "wer_pearson", "n_with_wer"}}}
        ({"n_rows_with_meta": 0, "keys": {}} when no row has a `meta` value).
    """
    values, pairs, n = _gather(facts)
    keys = {}
    for k in sorted(values):
        p = np.asarray(pairs[k], np.float64).reshape(-1, 2)
        r = None
        if len(p) > 2 and p[:, 0].std() > 0 and p[:, 1].std() > 0:
            r = round(float(np.corrcoef(p[:, 0], p[:, 1])[0, 1]), 4)
        keys[k] = {"n": sum(len(v) for v in values[k].values()),
                   "by_source": {s: summary(v) for s, v in sorted(values[k].items())},
                   "wer_pearson": r, "n_with_wer": len(p)}
    return {"n_rows_with_meta": n, "keys": keys}


def plot_name(key: str) -> str:
    return "meta_" + re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def plot_quality(facts: list[RowFact]) -> dict[str, bytes]:
    """Per key: a histogram per source and a scatter against WER."""
    values, pairs, _ = _gather(facts)
    plots = {}
    for k in sorted(values):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        for src, v in values[k].items():
            a1.hist(v, bins=30, alpha=0.6, label=f"{src} (n={len(v)})")
        a1.set_xlabel(k)
        a1.set_ylabel("rows")
        a1.legend(fontsize=7)
        pts = pairs[k]
        if pts:
            x, y = zip(*pts)
            a2.scatter(x, y, s=8, alpha=0.6)
        a2.set_xlabel(k)
        a2.set_ylabel("WER (worst scored turn)")
        fig.suptitle(f"Quality metadata `{k}`: per source, and against WER", fontsize=10)
        plots[plot_name(k)] = png(fig)
    return plots
