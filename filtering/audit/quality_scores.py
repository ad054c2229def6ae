"""The run's own audio-quality scores (`--quality dnsmos,vad`): distributions, what-if curves, WER against DNSMOS.

A DNSMOS or silence cut is picked the way a WER cut is: from what each threshold would keep.
For every quality rule (`filtering.rules.QUALITY_RULES`) a row is kept at threshold t iff it
passes every other rule of the run (`RowFact.q_eligible`) and its gate value (worst scored clip,
float32 as stored) passes t; a null value (no speech found, for the silences) passes, as in
`decide`. At the run's own threshold the curve reproduces the run's kept rows.

    >>> q = quality_curves(facts, rules)
    >>> q["min_dnsmos_ovrl"]["rows"][i]   # {"threshold": 2.4, "kept": 11, "hours_kept": 0.01, "run": True}
    >>> quality_scores(facts)["columns"]["dnsmos_ovrl"]["by_source"]["emilia"]["p50"]
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from filtering.audit.figure import plt, png
from filtering.audit.read import RowFact
from filtering.audit.stats import summary
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


def _counts(facts: list[RowFact], rule: str, thresholds: list) -> list[dict]:
    col, _, kind = QUALITY_RULES[rule]
    ok = [f for f in facts if f.q_eligible and f.q_eligible[rule]]
    has = [f for f in ok if f.quality[col] is not None]
    val = np.asarray([f.quality[col] for f in has], np.float32)
    sec = np.asarray([f.seconds for f in has], np.float64)
    null_rows, null_s = len(ok) - len(has), sum(f.seconds for f in ok if f.quality[col] is None)
    out = []
    for t in thresholds:
        if t is None:
            keep = np.ones(len(val), bool)
        else:
            keep = val >= np.float32(t) if kind == "min" else val <= np.float32(t)
        out.append({"threshold": t, "kept": int(keep.sum()) + null_rows,
                    "hours_kept": round((float(sec[keep].sum()) + null_s) / 3600, 6)})
    return out


def quality_curves(facts: list[RowFact], rules: Rules | None) -> dict:
    """Per quality rule whose column the run scored: kept rows and hours over its grid (plus the run's own
    threshold and `None` = rule off), overall and per source.

    Returns:
        {rule: {"column", "run_threshold", "rows": [{"threshold", "kept", "hours_kept", "run"}], "by_source",
                "n_rows", "n_eligible"}} ({} when no row carries quality scores).
    """
    rows_in = [f for f in facts if f.status in ("kept", "rejected") and f.quality is not None]
    out = {}
    for rule, (col, _, _) in QUALITY_RULES.items():
        if not any(f.quality[col] is not None for f in rows_in):
            continue
        run_t = getattr(rules, rule) if rules is not None else None
        thresholds = sorted(set(_grid(rule)) | ({run_t} if run_t is not None else set())) + [None]

        def mark(rows: list[dict]) -> list[dict]:
            return [{**r, "run": r["threshold"] is not None and r["threshold"] == run_t} for r in rows]  # noqa: B023

        by_src: dict[str, list[RowFact]] = defaultdict(list)
        for f in rows_in:
            by_src[f.source or "(none)"].append(f)
        out[rule] = {"column": col, "run_threshold": run_t, "rows": mark(_counts(rows_in, rule, thresholds)),
                     "by_source": {s: mark(_counts(fs, rule, thresholds)) for s, fs in sorted(by_src.items())},
                     "n_rows": len(rows_in), "n_eligible": sum(bool(f.q_eligible[rule]) for f in rows_in)}
    return out


def _pearson(pairs: list[tuple[float, float]]) -> float | None:
    p = np.asarray(pairs, np.float64).reshape(-1, 2)
    if len(p) > 2 and p[:, 0].std() > 0 and p[:, 1].std() > 0:
        return round(float(np.corrcoef(p[:, 0], p[:, 1])[0, 1]), 4)
    return None


def _series(facts: list[RowFact]) -> dict:
    """Per-clip values per column and source, (DNSMOS OVRL, WER) per clip, (meta dnsmos, our OVRL) per row."""
    values: dict[str, dict[str, list[float]]] = {c: defaultdict(list) for c in QUALITY_COLUMNS}
    wer_pairs, meta_pairs = [], []
    for f in facts:
        if not f.clips:
            continue
        for clip in f.clips:
            for c in QUALITY_COLUMNS:
                if clip[c] is not None:
                    values[c][f.source or "(none)"].append(float(clip[c]))
            if clip["dnsmos_ovrl"] is not None and clip["wer"] is not None:
                wer_pairs.append((float(clip["dnsmos_ovrl"]), float(clip["wer"])))
        m = (f.meta or {}).get(META_DNSMOS)
        if isinstance(m, (int, float)) and not isinstance(m, bool) and f.quality["dnsmos_ovrl"] is not None:
            meta_pairs.append((float(m), float(f.quality["dnsmos_ovrl"])))
    return {"values": values, "wer": wer_pairs, "meta": meta_pairs}


def quality_scores(facts: list[RowFact]) -> dict:
    """Distributions of the quality columns (per scored clip, per source), DNSMOS OVRL against WER, and the
    input's own DNSMOS (Emilia's `meta.dnsmos`) against ours where rows carry it.

    Returns:
        {"columns": {column: {"all": summary, "by_source": {source: summary}}}, "wer_vs_dnsmos": {"n", "pearson"},
         "meta_dnsmos": {"n", "pearson", "mean_delta", "mean_abs_delta"}} ({} when nothing was scored).
    """
    s = _series(facts)
    if not any(s["values"][c] for c in QUALITY_COLUMNS):
        return {}
    cols = {c: {"all": summary([x for v in s["values"][c].values() for x in v]),
                "by_source": {src: summary(v) for src, v in sorted(s["values"][c].items())}}
            for c in QUALITY_COLUMNS if s["values"][c]}
    meta = np.asarray(s["meta"], np.float64).reshape(-1, 2)
    d = meta[:, 1] - meta[:, 0]
    return {"columns": cols, "wer_vs_dnsmos": {"n": len(s["wer"]), "pearson": _pearson(s["wer"])},
            "meta_dnsmos": {"n": len(meta), "pearson": _pearson(s["meta"]),
                            "mean_delta": round(float(d.mean()), 4) if len(d) else None,
                            "mean_abs_delta": round(float(np.abs(d).mean()), 4) if len(d) else None}}


def lowest_dnsmos_kept(facts: list[RowFact], n: int = N_LOWEST) -> list[RowFact]:
    """The kept rows with the lowest DNSMOS OVRL: the ones to listen to before trusting a cut."""
    kept = [f for f in facts if f.status == "kept" and f.quality and f.quality["dnsmos_ovrl"] is not None]
    return sorted(kept, key=lambda f: (f.quality["dnsmos_ovrl"], f.id))[:n]


def plot_quality_scores(facts: list[RowFact], curves: dict) -> dict[str, bytes]:
    """`quality_<column>` per-source histograms, `quality_curve_<rule>`, `wer_vs_dnsmos`, `meta_dnsmos_vs_ovrl`."""
    s = _series(facts)
    plots = {}
    for c in QUALITY_COLUMNS:
        if not s["values"][c]:
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        allv = np.concatenate([np.asarray(v, float) for v in s["values"][c].values()])
        bins = np.linspace(allv.min(), allv.max() if allv.max() > allv.min() else allv.min() + 1, 30)
        for src, v in sorted(s["values"][c].items()):
            ax.stairs(np.histogram(v, bins=bins)[0], bins, fill=True, alpha=0.6, label=f"{src} (n={len(v)})")
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
    for name, pairs, xl, yl in (("wer_vs_dnsmos", s["wer"], "DNSMOS OVRL", "WER"),
                                ("meta_dnsmos_vs_ovrl", s["meta"], "meta.dnsmos (the input's)", "dnsmos_ovrl (ours)")):
        if not pairs:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        x, y = zip(*pairs)
        ax.scatter(x, y, s=10, alpha=0.7)
        if name == "meta_dnsmos_vs_ovrl":
            lo, hi = min(x + y) - 0.1, max(x + y) + 0.1
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{yl} against {xl} (n={len(pairs)})", fontsize=9)
        plots[name] = png(fig)
    return plots
