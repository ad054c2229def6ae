"""Compare two filter runs row by row: what a new rule, ASR model or corpus drop changed.

Rows are joined on their id (`dialogue_id` / `utt_id`, quarantined rows on the quarantine
table's id). Runs over different inputs are compared on the rows they share; the rows only
one run has are counted, not judged.

    >>> c = compare_runs(facts_a, facts_b, "out/run_a", "out/run_b")
    >>> [r["id"] for r in c["newly_kept"]]
    ['m02_truncated']
"""

from __future__ import annotations

from filtering.audit.figure import plt, png
from filtering.audit.read import FactCollector, RowFact, quarantine_facts, read_quarantine, scan
from filtering.quality import QUALITY_COLUMNS
from tokenization.dialogue_schema import detect_kind

WER_EPS = 1e-6  # float32 WERs equal within this are unchanged


def read_facts(folder: str) -> list[RowFact]:
    """Per-row facts of a run (kept, rejected, quarantined), read without audio."""
    collector = FactCollector()
    scan(folder, [collector], detect_kind(folder))
    return collector.facts + quarantine_facts(read_quarantine(folder))


def _totals(facts: list[RowFact]) -> dict:
    t = {s: sum(f.status == s for f in facts) for s in ("kept", "rejected", "quarantined")}
    t["hours_kept"] = round(sum(f.seconds for f in facts if f.status == "kept") / 3600, 6)
    return t


def _moved(a: RowFact, b: RowFact) -> dict:
    return {"id": a.id, "status_a": a.status, "status_b": b.status, "reason_a": a.reason, "reason_b": b.reason,
            "wer_a": _r(a.wer), "wer_b": _r(b.wer), "seconds": round(b.seconds or a.seconds, 3)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _kept_mean(facts: list[RowFact], col: str) -> float | None:
    v = [f.quality[col] for f in facts if f.status == "kept" and f.quality and f.quality[col] is not None]
    return round(sum(v) / len(v), 4) if v else None


def quality_change(pairs: list[tuple[RowFact, RowFact]], facts_a: list[RowFact], facts_b: list[RowFact]) -> dict:
    """Per quality column scored in either run: shared rows scored in both, how many changed, the mean change,
    and the mean over each run's kept rows (a stricter DNSMOS cut raises it)."""
    out = {}
    for col in QUALITY_COLUMNS:
        both = [(x.quality[col], y.quality[col]) for x, y in pairs
                if x.quality and y.quality and x.quality[col] is not None and y.quality[col] is not None]
        ka, kb = _kept_mean(facts_a, col), _kept_mean(facts_b, col)
        if not both and ka is None and kb is None:
            continue
        deltas = [float(b) - float(a) for a, b in both]
        out[col] = {"n": len(both), "n_changed": sum(abs(d) > WER_EPS for d in deltas),
                    "mean_delta": round(sum(deltas) / len(deltas), 4) if deltas else None,
                    "kept_mean_a": ka, "kept_mean_b": kb,
                    "kept_mean_delta": None if ka is None or kb is None else round(kb - ka, 4)}
    return out


def compare_runs(facts_a: list[RowFact], facts_b: list[RowFact], folder_a: str, folder_b: str) -> dict:
    """Row-level differences of run B against run A.

    Returns:
        {"run_a", "run_b", "shared", "only_in_a", "only_in_b", "note", "kept_in_both", "rejected_in_both",
         "newly_kept": [row], "newly_rejected": [row], "other_moves": [row], "wer_change": {"n", "n_changed",
         "mean_delta", "rows": [{"id", "wer_a", "wer_b", "delta"}]}, "counts": {"a", "b", "delta"},
         "quality_change": {column: {"n", "n_changed", "mean_delta", "kept_mean_a", "kept_mean_b", "kept_mean_delta"}}};
         a row holds both statuses and both reasons.
    """
    a = {f.id: f for f in facts_a}
    b = {f.id: f for f in facts_b}
    shared = sorted(a.keys() & b.keys())
    pairs = [(a[i], b[i]) for i in shared]
    newly_kept = [_moved(x, y) for x, y in pairs if x.status != "kept" and y.status == "kept"]
    newly_rejected = [_moved(x, y) for x, y in pairs if x.status == "kept" and y.status != "kept"]
    other = [_moved(x, y) for x, y in pairs if x.status != y.status and "kept" not in (x.status, y.status)]
    wer_rows = [{"id": x.id, "wer_a": _r(x.wer), "wer_b": _r(y.wer), "delta": round(float(y.wer) - float(x.wer), 4)}
                for x, y in pairs if x.wer is not None and y.wer is not None]
    changed = [r for r in wer_rows if abs(r["delta"]) > WER_EPS]
    only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
    ta, tb = _totals(facts_a), _totals(facts_b)
    note = "" if not (only_a or only_b) else (
        f"The runs do not have the same rows: {only_a} only in run A, {only_b} only in run B; "
        f"rows are compared on the {len(shared)} they share (counts and hours below are per run, all rows).")
    return {
        "run_a": folder_a, "run_b": folder_b, "shared": len(shared), "only_in_a": only_a, "only_in_b": only_b, "note": note,
        "kept_in_both": sum(x.status == y.status == "kept" for x, y in pairs),
        "rejected_in_both": sum(x.status == y.status == "rejected" for x, y in pairs),
        "newly_kept": newly_kept, "newly_rejected": newly_rejected, "other_moves": other,
        "wer_change": {"n": len(wer_rows), "n_changed": len(changed),
                       "mean_delta": round(sum(r["delta"] for r in wer_rows) / len(wer_rows), 4) if wer_rows else None,
                       "rows": sorted(wer_rows, key=lambda r: (-abs(r["delta"]), r["id"]))},
        "counts": {"a": ta, "b": tb, "delta": {k: round(tb[k] - ta[k], 6) for k in ta}},
        "quality_change": quality_change(pairs, facts_a, facts_b),
    }


def plot_wer_change(cmp: dict) -> bytes | None:
    """Run A's WER against run B's per shared row; off-diagonal points changed."""
    rows = cmp["wer_change"]["rows"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter([r["wer_a"] for r in rows], [r["wer_b"] for r in rows], s=10)
    hi = max(max(r["wer_a"], r["wer_b"]) for r in rows) + 0.05
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set_xlabel("WER in run A")
    ax.set_ylabel("WER in run B")
    ax.set_title(f"WER per shared row ({cmp['wer_change']['n_changed']} changed)", fontsize=10)
    return png(fig)
