"""Quality metadata the input carried (the shards' `meta` JSON column, e.g. Emilia's `dnsmos`).

Shows each numeric key's distribution per source and its relation to WER: if low DNSMOS goes
with high WER, a DNSMOS cut could replace part of the ASR pass, and the other way round.

    >>> quality_meta(merged.meta_keys, merged.n_meta)["keys"]["dnsmos"]["by_source"]["emilia"]["p50"]
    3.21
"""

from __future__ import annotations

import re

import numpy as np

from filtering.audit.figure import plt, png


def quality_meta(meta_keys: dict, n_rows_with_meta: int) -> dict:
    """Per numeric `meta` key: rows carrying it, summary per source, Pearson r with WER.

    Args:
        meta_keys: the scan's {key: {"by_source": {source: Sketch}, "wer": Moments of (value, WER), "sample"}}.
    Returns:
        {"n_rows_with_meta", "keys": {key: {"n", "by_source": {source: summary}, "wer_pearson", "n_with_wer"}}}
        ({"n_rows_with_meta": 0, "keys": {}} when no row has a `meta` value).
    """
    keys = {k: {"n": sum(s.n for s in v["by_source"].values()),
                "by_source": {s: sk.summary() for s, sk in sorted(v["by_source"].items())},
                "wer_pearson": v["wer"].pearson(), "n_with_wer": v["wer"].n} for k, v in sorted(meta_keys.items())}
    return {"n_rows_with_meta": n_rows_with_meta, "keys": keys}


def plot_name(key: str) -> str:
    return "meta_" + re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def plot_quality(meta_keys: dict) -> dict[str, bytes]:
    """Per key: a histogram per source and a scatter against WER (a sample of at most `sketch.N_SAMPLE` points)."""
    plots = {}
    for k, v in sorted(meta_keys.items()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        for src, sk in v["by_source"].items():
            x, w = sk.hist()
            counts, edges = np.histogram(x, bins=30, weights=w)
            a1.stairs(counts, edges, fill=True, alpha=0.6, label=f"{src} (n={sk.n})")
        a1.set_xlabel(k)
        a1.set_ylabel("rows")
        a1.legend(fontsize=7)
        pts = [xy for _, _, xy in v["sample"]]
        if pts:
            x, y = zip(*pts)
            a2.scatter(x, y, s=8, alpha=0.6)
        a2.set_xlabel(k)
        a2.set_ylabel("WER (worst scored turn)")
        fig.suptitle(f"Quality metadata `{k}`: per source, and against WER", fontsize=10)
        plots[plot_name(k)] = png(fig)
    return plots
