"""Threshold what-if: rows and hours a filter run would keep at other `max_wer` values.

The paper filters by a Whisper-WER threshold it does not publish, so the auditor picks one
from this curve before rerunning the filter. A row is kept at threshold t iff it passes every
other rule of the run (`RowFact.eligible`: rejected rows are judged again with `max_wer` off)
and its worst scored WER <= t. WER is compared in float32, as stored, so the curve at the run's
own threshold reproduces the run's kept rows exactly.

    >>> curve = threshold_curve(facts, run_max_wer=0.1)
    >>> curve["rows"][i]  # {"max_wer": 0.1, "kept": 11, "hours_kept": 0.0123, "run": True}
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from filtering.audit.figure import plt, png
from filtering.audit.read import RowFact

GRID = tuple(round(float(x), 3) for x in (*np.arange(0.0, 0.2, 0.01), *np.arange(0.2, 1.0001, 0.05)))


def _counts(facts: list[RowFact], thresholds: list[float]) -> list[dict]:
    ok = [f for f in facts if f.eligible and f.wer is not None]
    wer = np.asarray([f.wer for f in ok], np.float32)
    sec = np.asarray([f.seconds for f in ok], np.float64)
    unscored = [f for f in facts if f.status == "kept" and f.wer is None]  # kept without a score: kept at any threshold
    base_rows, base_s = len(unscored), sum(f.seconds for f in unscored)
    out = []
    for t in thresholds:
        keep = wer <= np.float32(t) if t is not None else np.ones(len(wer), bool)
        out.append({"max_wer": t, "kept": int(keep.sum()) + base_rows,
                    "hours_kept": round((float(sec[keep].sum()) + base_s) / 3600, 6)})
    return out


def threshold_curve(facts: list[RowFact], run_max_wer: float | None, grid: tuple[float, ...] = GRID) -> dict:
    """Kept rows and hours for each `max_wer` in `grid` (plus the run's own and `None` = no WER rule).

    Args:
        facts: every kept and rejected row of the run (quarantined rows never count).
        run_max_wer: the threshold the run used (marked `run: true` in the rows).
    Returns:
        {"run_max_wer", "rows": [{"max_wer", "kept", "hours_kept", "run"}], "by_source": {source: rows},
         "n_rows", "n_unscored_rejects", "note"}.
    """
    rows_in = [f for f in facts if f.status in ("kept", "rejected")]
    thresholds = sorted(set(grid) | ({run_max_wer} if run_max_wer is not None else set())) + [None]
    unscored = sum(1 for f in rows_in if f.status == "rejected" and f.wer is None and not f.reason.startswith("no_scored_turn"))
    note = ""
    if unscored:
        note = (f"{unscored} rejected rows were stored without WER scores (an older filter run): the curve counts "
                "them as rejected at every threshold, so kept figures above the run's threshold are a lower bound.")

    def mark(rows: list[dict]) -> list[dict]:
        return [{**r, "run": r["max_wer"] is not None and r["max_wer"] == run_max_wer} for r in rows]

    by_src: dict[str, list[RowFact]] = defaultdict(list)
    for f in rows_in:
        by_src[f.source or "(none)"].append(f)
    return {"run_max_wer": run_max_wer, "rows": mark(_counts(rows_in, thresholds)),
            "by_source": {s: mark(_counts(fs, thresholds)) for s, fs in sorted(by_src.items())},
            "n_rows": len(rows_in), "n_eligible": sum(f.eligible for f in rows_in),
            "n_unscored_rejects": unscored, "note": note}


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
