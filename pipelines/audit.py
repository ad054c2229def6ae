"""Audit a tokenize or filter output folder (local or s3://) into an HTML/PNG/JSON report.

    python -m pipelines.audit OUT --report REPORT_DIR
"""

from __future__ import annotations

import argparse
import json
import sys

from filtering.audit import audit


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m pipelines.audit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="output folder of pipelines.tokenize or pipelines.filter")
    p.add_argument("--report", required=True, help="report folder: index.html, audit.json, plots/")
    args = p.parse_args(argv)
    result = audit(args.folder, args.report)
    s = result["stages"][0]
    print(f"[audit] {result['kind']}: in {s['in']} = kept {s['kept']} + rejected {s['rejected']} + quarantined {s['quarantined']}; "
          f"report {args.report.rstrip('/')}/index.html", file=sys.stderr)
    print(json.dumps({"report": args.report, "kind": result["kind"], **{k: s[k] for k in ("in", "kept", "rejected", "quarantined")}}))
    return result


if __name__ == "__main__":
    main()
