"""Data-quality audit of tokenize and filter output folders: `audit.json`, PNG plots, one HTML page.

    >>> from filtering.audit import audit
    >>> audit("out/filter", "out/report")    # -> dict as in out/report/audit.json
    >>> audit("out/filter", "out/report", LintConfig(tokenizer="tokenizer.json"))["lint"]["failed"]
    ['duplicate_audio']
"""

from filtering.audit.lint import LintConfig, lint
from filtering.audit.report import write_report
from filtering.audit.stats import collect


def audit(folder: str, report_dir: str, lint_cfg: LintConfig | None = None) -> dict:
    figures = collect(folder)
    results = lint(folder, lint_cfg)
    figures["lint"] = {"passed": all(r.passed for r in results), "failed": [r.name for r in results if not r.passed],
                       "checks": [r.to_dict() for r in results]}
    return write_report(figures, report_dir)
