"""The run's own audio-quality scores (`--quality dnsmos,vad`): distributions, what-if curves, WER against DNSMOS.

A DNSMOS or silence cut is picked the way a WER cut is: from what each threshold would keep.
For every quality rule (`filtering.rules.QUALITY_RULES`) a row is kept at threshold t iff it
passes every other rule of the run (`RowFact.q_eligible`) and its gate value (worst scored clip,
float32 as stored) passes t; a null value (no speech found, for the silences) passes, as in
`decide`. At the run's own threshold the curve reproduces the run's kept rows.

    >>> q = quality_curves(merged.q_curves, merged.q_counts, rules)   # merged: partial.FilePartial
    >>> q["min_dnsmos_ovrl"]["rows"][i]   # {"threshold": 2.4, "kept": 11, "hours_kept": 0.01, "run": True}
    >>> quality_scores(merged.q_values, merged.q_pairs)["columns"]["dnsmos_ovrl"]["by_source"]["emilia"]["p50"]
"""

from __future__ import annotations

import numpy as np

from filtering.audit.figure import plt, png
from filtering.audit.sketch import Curve, Sketch
from filtering.quality import QUALITY_COLUMNS
from filtering.rules import QUALITY_RULES, Rules

GRIDS = {"dnsmos": tuple(round(float(x), 2) for x in np.arange(1.0, 4.51, 0.1)),
         "speech_ratio": tuple(round(float(x), 2) for x in np.arange(0.0, 1.001, 0.05)),
         "silence": tuple(round(float(x), 2) for x in np.arange(0.0, 5.001, 0.25))}
META_DNSMOS = "dnsmos"  # Emilia's key in `meta` (its DNSMOS P.835 OVRL)
N_LOWEST = 5  # lowest-DNSMOS kept rows offered to the listen section


def _grid(rule: str) -> tuple[float, ...]:
    col = QUALITY_RULES[rule][0]
    return GRIDS["dnsmos" if col.startswith("dnsmos_") else "speech_ratio" if col == "speech_ratio" else "silence"]


def thresholds(rule: str, run_t: float | None) -> list:
    """The curve's thresholds of `rule`: its grid, the run's own, and `None` (rule off) last."""
    return sorted(set(_grid(rule)) | ({run_t} if run_t is not None else set())) + [None]


def quality_curves(curves: dict[str, dict[str, Curve]], counts: dict, rules: Rules | None) -> dict:
    """Per quality rule whose column the run scored: kept rows and hours over its grid (plus the run's own
    threshold and `None` = rule off), overall and per source.

    Args:
        curves: the scan's counts, {rule: {source ("" = all rows): Curve}}; counts: {rule: {"any", "n_rows", "n_eligible"}}.
    Returns:
        {rule: {"column", "run_threshold", "rows": [{"threshold", "kept", "hours_kept", "run"}], "by_source",
                "n_rows", "n_eligible"}} ({} when no row carries quality scores).
    """
    out = {}
    for rule, (col, _, _) in QUALITY_RULES.items():
        c = counts.get(rule)
        if not c or not c["any"]:
            continue
        run_t = getattr(rules, rule) if rules is not None else None
        ts = thresholds(rule, run_t)

        def mark(curve: Curve) -> list[dict]:
            return [{**r, "run": r["threshold"] is not None and r["threshold"] == run_t} for r in curve.rows(ts, "threshold")]  # noqa: B023

        by = curves[rule]
        out[rule] = {"column": col, "run_threshold": run_t, "rows": mark(by[""]),
                     "by_source": {s: mark(v) for s, v in sorted(by.items()) if s}, "n_rows": c["n_rows"], "n_eligible": c["n_eligible"]}
    return out


def quality_scores(values: dict, pairs: dict) -> dict:
    """Distributions of the quality columns (per scored clip, per source), DNSMOS OVRL against WER, and the
    input's own DNSMOS (Emilia's `meta.dnsmos`) against ours where rows carry it.

    Args:
        values: {column: {"all": Sketch, "by_source": {source: Sketch}}} per scored clip;
        pairs: {"wer": (DNSMOS OVRL, WER) per clip, "meta": (meta.dnsmos, our OVRL) per row}, each
            {"m": Moments, "sample", "d": sum of (y - x), "ad": sum of |y - x|}.
    Returns:
        {"columns": {column: {"all": summary, "by_source": {source: summary}}}, "wer_vs_dnsmos": {"n", "pearson"},
         "meta_dnsmos": {"n", "pearson", "mean_delta", "mean_abs_delta"}} ({} when nothing was scored).
    """
    if not values:
        return {}
    cols = {c: {"all": values[c]["all"].summary(), "by_source": {s: sk.summary() for s, sk in sorted(values[c]["by_source"].items())}}
            for c in QUALITY_COLUMNS if c in values}
    w, m = pairs["wer"]["m"], pairs["meta"]
    n = m["m"].n
    return {"columns": cols, "wer_vs_dnsmos": {"n": w.n, "pearson": w.pearson()},
            "meta_dnsmos": {"n": n, "pearson": m["m"].pearson(), "mean_delta": round(m["d"] / n, 4) if n else None,
                            "mean_abs_delta": round(m["ad"] / n, 4) if n else None}}


def hist_by_source(ax, by_source: dict[str, Sketch], bins) -> None:
    for src, sk in sorted(by_source.items()):
        v, wts = sk.hist()
        ax.stairs(np.histogram(v, bins=bins, weights=wts)[0], bins, fill=True, alpha=0.6, label=f"{src} (n={sk.n})")


def plot_quality_scores(values: dict, pairs: dict, curves: dict) -> dict[str, bytes]:
    """`quality_<column>` per-source histograms, `quality_curve_<rule>`, `wer_vs_dnsmos`, `meta_dnsmos_vs_ovrl`
    (scatter plots of a sample of at most `sketch.N_SAMPLE` points)."""
    plots = {}
    for c in QUALITY_COLUMNS:
        if c not in values:
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        lo, hi = values[c]["all"].lo, values[c]["all"].hi
        hist_by_source(ax, values[c]["by_source"], np.linspace(lo, hi if hi > lo else lo + 1, 30))
        ax.set_xlabel(c)
        ax.set_ylabel("scored clips")
        ax.set_title(f"{c} per source", fontsize=10)
        ax.legend(fontsize=7)
        plots[f"quality_{c}"] = png(fig)
    for rule, curve in curves.items():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        pts = [r for r in curve["rows"] if r["threshold"] is not None]
        x = [r["threshold"] for r in pts]
        a1.plot(x, [r["kept"] for r in pts], lw=2)
        a2.plot(x, [r["hours_kept"] for r in pts], lw=2)
        for ax, label in ((a1, "kept rows"), (a2, "kept hours")):
            if curve["run_threshold"] is not None:
                ax.axvline(curve["run_threshold"], color="r", ls="--", lw=1, label=f"this run: {curve['run_threshold']:g}")
                ax.legend(fontsize=7)
            ax.set_xlabel(rule)
            ax.set_ylabel(label)
        fig.suptitle(f"What each {rule} keeps", fontsize=10)
        plots[f"quality_curve_{rule}"] = png(fig)
    for name, key, xl, yl in (("wer_vs_dnsmos", "wer", "DNSMOS OVRL", "WER"),
                              ("meta_dnsmos_vs_ovrl", "meta", "meta.dnsmos (the input's)", "dnsmos_ovrl (ours)")):
        sample = [xy for _, _, xy in pairs.get(key, {}).get("sample", [])]
        if not sample:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        x, y = zip(*sample)
        ax.scatter(x, y, s=10, alpha=0.7)
        if name == "meta_dnsmos_vs_ovrl":
            lo, hi = min(x + y) - 0.1, max(x + y) + 0.1
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{yl} against {xl} (n={pairs[key]['m'].n})", fontsize=9)
        plots[name] = png(fig)
    return plots
