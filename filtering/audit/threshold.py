"""Threshold what-if: rows and hours a filter run would keep at other `max_wer` values.

The paper filters by a Whisper-WER threshold it does not publish, so the auditor picks one
from this curve before rerunning the filter. A row is kept at threshold t iff it passes every
other rule of the run (`RowFact.eligible`: rejected rows are judged again with `max_wer` off)
and its worst scored WER <= t. WER is compared in float32, as stored, so the curve at the run's
own threshold reproduces the run's kept rows exactly.

    >>> curve = threshold_curve(merged.wer_curve, merged.wer_counts, run_max_wer=0.1)   # merged: partial.FilePartial
    >>> curve["rows"][i]  # {"max_wer": 0.1, "kept": 11, "hours_kept": 0.0123, "run": True}
"""

from __future__ import annotations

import numpy as np

from filtering.audit.figure import plt, png
from filtering.audit.sketch import Curve

GRID = tuple(round(float(x), 3) for x in (*np.arange(0.0, 0.2, 0.01), *np.arange(0.2, 1.0001, 0.05)))


def thresholds(run_max_wer: float | None, grid: tuple[float, ...] = GRID) -> list:
    """The curve's `max_wer` values: the grid, the run's own, and `None` (no WER rule) last."""
    return sorted(set(grid) | ({run_max_wer} if run_max_wer is not None else set())) + [None]


def threshold_curve(curves: dict[str, Curve], counts: dict, run_max_wer: float | None) -> dict:
    """Kept rows and hours for each `max_wer` of `thresholds(run_max_wer)`.

    Args:
        curves: the scan's counts per threshold over every kept and rejected row ("" key) and per source
            (quarantined rows never count); `counts`: its `n_rows`, `n_eligible`, `n_unscored`.
        run_max_wer: the threshold the run used (marked `run: true` in the rows).
    Returns:
        {"run_max_wer", "rows": [{"max_wer", "kept", "hours_kept", "run"}], "by_source": {source: rows},
         "n_rows", "n_eligible", "n_unscored_rejects", "note"}.
    """
    ts = thresholds(run_max_wer)
    unscored = counts["n_unscored"]
    note = ""
    if unscored:
        note = (f"{unscored} rejected rows were stored without WER scores (an older filter run): the curve counts "
                "them as rejected at every threshold, so kept figures above the run's threshold are a lower bound.")

    def mark(curve: Curve) -> list[dict]:
        return [{**r, "run": r["max_wer"] is not None and r["max_wer"] == run_max_wer} for r in curve.rows(ts, "max_wer")]

    return {"run_max_wer": run_max_wer, "rows": mark(curves.get("", Curve.empty(len(ts)))),
            "by_source": {s: mark(c) for s, c in sorted(curves.items()) if s},
            "n_rows": counts["n_rows"], "n_eligible": counts["n_eligible"], "n_unscored_rejects": unscored, "note": note}


def plot_curve(curve: dict) -> bytes:
    """Kept rows and kept hours against max_wer (per source when several), the run's threshold marked."""

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    series = {"all": curve["rows"]}
    if len(curve["by_source"]) > 1:
        series.update(curve["by_source"])
    for name, rows in series.items():
        pts = [r for r in rows if r["max_wer"] is not None]
        x = [r["max_wer"] for r in pts]
        a1.plot(x, [r["kept"] for r in pts], label=name, lw=2 if name == "all" else 1)
        a2.plot(x, [r["hours_kept"] for r in pts], label=name, lw=2 if name == "all" else 1)
    for ax, label in ((a1, "kept rows"), (a2, "kept hours")):
        if curve["run_max_wer"] is not None:
            ax.axvline(curve["run_max_wer"], color="r", ls="--", lw=1, label=f"this run: {curve['run_max_wer']:g}")
        ax.set_xlabel("max_wer")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("What each WER threshold keeps", fontsize=10)
    return png(fig)
