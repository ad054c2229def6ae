"""Data-quality audit of tokenize and filter output folders: `audit.json`, PNG plots, one HTML page.

    >>> from filtering.audit import audit
    >>> audit("out/filter", "out/report")    # -> dict as in out/report/audit.json
    >>> audit("out/filter", "out/report", LintConfig(tokenizer="tokenizer.json"))["lint"]["failed"]
    ['duplicate_audio']
    >>> audit("out/run_b", "out/report", options=AuditOptions(compare="out/run_a"))["compare"]["newly_kept"]

One read of the folder feeds stats, lint and the per-row facts (threshold curve, compare,
quality metadata, the run's DNSMOS/VAD scores and their what-if curves); only the example rows' audio is fetched again, by row group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from filtering.audit.compare import compare_runs, read_facts
from filtering.audit.lint import LintCollector, LintConfig, lint_data
from filtering.audit.listen import ListenOptions, listen_examples
from filtering.audit.quality import quality_meta
from filtering.audit.quality_scores import quality_curves, quality_scores
from filtering.audit.read import FactCollector, quarantine_facts, read_manifest, run_rules
from filtering.audit.report import write_report
from filtering.audit.stats import collect
from filtering.audit.threshold import threshold_curve
from tokenization.dialogue_schema import TOKENIZE, detect_kind

__all__ = ["AuditOptions", "LintConfig", "ListenOptions", "audit"]


@dataclass
class AuditOptions:
    """What the auditor asked beyond the figures: audio embedding, and a run to compare against."""

    listen: ListenOptions = field(default_factory=ListenOptions)
    compare: str | None = None  # folder of the earlier run (run A); this folder is run B


def audit(folder: str, report_dir: str, lint_cfg: LintConfig | None = None, options: AuditOptions | None = None) -> dict:
    options = options or AuditOptions()
    kind = detect_kind(folder)
    manifest = read_manifest(folder)
    lint_rows = LintCollector()
    facts = FactCollector(run_rules(manifest, {}))
    figures = collect(folder, [lint_rows, facts], kind, manifest)
    results = lint_data(lint_rows.rows, lint_rows.clips, lint_rows.frame_rate, lint_cfg or LintConfig())
    checks = [r.to_dict() for r in results]
    figures["lint"] = {"passed": all(r.passed for r in results), "failed": [r.name for r in results if not r.passed], "checks": checks}
    all_facts = facts.facts + quarantine_facts(figures["_quarantine"])
    figures["_facts"] = all_facts
    if kind != TOKENIZE:
        figures["threshold_curve"] = threshold_curve(facts.facts, facts.rules.max_wer if facts.rules else None)
    figures["quality_meta"] = quality_meta(facts.facts)
    if kind != TOKENIZE:
        figures["quality_curves"] = quality_curves(facts.facts, facts.rules)
        figures["quality_scores"] = quality_scores(facts.facts)
    figures["listen"], figures["_audio"] = listen_examples(kind, facts.facts, figures, checks, options.listen)
    if options.compare:
        figures["compare"] = compare_runs(read_facts(options.compare), all_facts, options.compare, folder)
    return write_report(figures, report_dir)
