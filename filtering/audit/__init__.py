"""Data-quality audit of tokenize and filter output folders: `audit.json`, PNG plots, one HTML page.

    >>> from filtering.audit import audit
    >>> audit("out/filter", "out/report")    # -> dict as in out/report/audit.json
"""

from filtering.audit.report import write_report
from filtering.audit.stats import collect


def audit(folder: str, report_dir: str) -> dict:
    return write_report(collect(folder), report_dir)
