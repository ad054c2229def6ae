"""Data-quality audit of tokenize and filter output folders: `audit.json`, PNG plots, one HTML page.

    >>> from filtering.audit import audit
    >>> audit("out/filter", "out/report")    # -> dict as in out/report/audit.json
    >>> audit("out/filter", "out/report", LintConfig(tokenizer="tokenizer.json"))["lint"]["failed"]
    ['duplicate_audio']
    >>> audit("out/run_b", "out/report", options=AuditOptions(compare="out/run_a"))["compare"]["newly_kept"]

One read of each data file feeds stats, lint and the what-if curves (`partial.scan_file`: a partial
aggregate per file, merged in file order; the checks that group rows by key go by hash part), so the
driver's memory does not grow with the rows. A `runner` maps the files: `partial.LocalRunner` in this
process, Ray tasks in `pipelines.audit`. Only the example rows' audio is fetched again, by row group;
`--compare` joins both runs' per-row facts in this process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from filtering.audit.compare import compare_runs, read_facts
from filtering.audit.dedup import dedup_section
from filtering.audit.lint import LintConfig
from filtering.audit.listen import ListenOptions, example_groups, listen_examples, pick_examples
from filtering.audit.partial import LocalRunner, Runner, ScanSpec, collect, fact_figures, lint_results, stats_figures
from filtering.audit.read import data_files, find_rules, quarantine_summary, read_manifest
from filtering.audit.report import write_report
from tokenization.dialogue_schema import detect_kind

__all__ = ["AuditOptions", "LintConfig", "ListenOptions", "Runner", "audit", "collect"]


@dataclass
class AuditOptions:
    """What the auditor asked beyond the figures: audio embedding, a run to compare against, a dedup output."""

    listen: ListenOptions = field(default_factory=ListenOptions)
    compare: str | None = None  # folder of the earlier run (run A); this folder is run B
    dedup: str | None = None  # a pipelines.dedup --output folder: the "duplicates" section


def audit(folder: str, report_dir: str, lint_cfg: LintConfig | None = None, options: AuditOptions | None = None,
          runner: Runner | None = None) -> dict:
    options, lint_cfg, runner = options or AuditOptions(), lint_cfg or LintConfig(), runner or LocalRunner()
    kind = detect_kind(folder)
    manifest = read_manifest(folder)
    files = data_files(folder, kind)
    rules = find_rules(manifest, files)
    spec = ScanSpec(kind, rules, lint_cfg, runner.parts)
    merged, groups = runner.scan(spec, files)
    figures = stats_figures(folder, kind, manifest, quarantine_summary(folder), merged, groups)
    checks = [r.to_dict() for r in lint_results(merged, groups, lint_cfg)]
    figures["lint"] = {"passed": all(c["passed"] for c in checks), "failed": [c["name"] for c in checks if not c["passed"]], "checks": checks}
    figures.update(fact_figures(kind, rules, merged))
    figures["_plot_data"] = {"meta_keys": merged.meta_keys, "q_values": merged.q_values, "q_pairs": merged.q_pairs}
    ex_groups = example_groups(figures, checks, [i for _, i in merged.worst_kept], [i for _, i in merged.lowest_dnsmos])
    wanted = sorted({i for _, ids in ex_groups for i in ids}) if options.listen.max_examples > 0 else []
    by_id = {f.id: f for f in runner.locate(spec, files, wanted)} if wanted else {}
    figures["listen"], figures["_audio"] = listen_examples(kind, pick_examples(ex_groups, by_id), options.listen)
    if options.compare:
        figures["compare"] = compare_runs(read_facts(options.compare), read_facts(folder), options.compare, folder)
    if options.dedup:
        figures["dedup"], dedup_audio = dedup_section(options.dedup, options.listen)
        figures["_audio"] = {**figures["_audio"], **dedup_audio}
    return write_report(figures, report_dir)
