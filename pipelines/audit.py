"""Audit a tokenize or filter output folder (local or s3://) into an HTML/PNG/JSON report, with dataset lint.

    python -m pipelines.audit OUT --report REPORT_DIR [--tokenizer tokenizer.json] [--strict]
    python -m pipelines.audit RUN_B --compare RUN_A --report REPORT_DIR      # what changed between two filter runs
    python -m pipelines.audit OUT --report REPORT_DIR --codec tiny|PATH      # play clips stored only as codes

`--strict` exits 1 when a lint check fails (CI for data teams); 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from filtering.audit import AuditOptions, ListenOptions, audit
from filtering.audit.lint import LintConfig
from pipelines.cli import require_input, run


def _compare_summary(cmp: dict | None) -> dict:
    if not cmp:
        return {}
    return {"compare": {"shared": cmp["shared"], "only_in_a": cmp["only_in_a"], "only_in_b": cmp["only_in_b"],
                        "newly_kept": len(cmp["newly_kept"]), "newly_rejected": len(cmp["newly_rejected"]),
                        "delta": cmp["counts"]["delta"]}}


def main(argv: list[str] | None = None) -> dict:
    d = LintConfig()
    p = argparse.ArgumentParser(prog="python -m pipelines.audit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="output folder of pipelines.tokenize or pipelines.filter")
    p.add_argument("--report", required=True, help="report folder: index.html, audit.json, plots/")
    p.add_argument("--strict", action="store_true", help="exit 1 when a lint check fails")
    p.add_argument("--tokenizer", default="", help="tokenizer.json (local path) for the vocabulary check; skipped without")
    p.add_argument("--max-user-audio-s", type=float, default=d.max_user_audio_s, help="Whisper encoder window")
    p.add_argument("--talker-max-frames", type=int, default=d.talker_max_frames)
    p.add_argument("--min-words-per-s", type=float, default=d.min_words_per_s)
    p.add_argument("--max-words-per-s", type=float, default=d.max_words_per_s)
    p.add_argument("--frames-tolerance", type=float, default=d.frames_tolerance, help="share of expected frames allowed off (min 1 frame)")
    p.add_argument("--compare", default=None, metavar="RUN_A", help="an earlier filter output: rows that moved, WER change, deltas")
    p.add_argument("--codec", default=None, help="the run's codec, as the filter took it ('tiny' or a local checkpoint "
                   "folder): decodes clips stored only as codes; without it they are not played")
    p.add_argument("--audio-manifest", default=None, help="the run's input manifest: play assistant/TTS clips from their source files")
    p.add_argument("--max-audio-examples", type=int, default=ListenOptions.max_examples, help="example rows with audio players")
    p.add_argument("--max-audio-mb", type=float, default=ListenOptions.max_bytes / 2**20, help="cap on the audio embedded in the page")
    args = p.parse_args(argv)
    require_input("FOLDER", args.folder, "pass the --output folder of pipelines.tokenize or pipelines.filter")
    if args.compare:
        require_input("--compare", args.compare, "pass an earlier pipelines.filter --output folder")
    cfg = LintConfig(args.max_user_audio_s, args.talker_max_frames, args.min_words_per_s, args.max_words_per_s,
                     d.min_rate_duration_s, args.frames_tolerance, args.tokenizer)
    listen = ListenOptions(args.codec, args.max_audio_examples, int(args.max_audio_mb * 2**20), args.audio_manifest)
    result = audit(args.folder, args.report, cfg, AuditOptions(listen, args.compare))
    s, lint = result["stages"][0], result["lint"]
    print(f"[audit] {result['kind']}: in {s['in']} = kept {s['kept']} + rejected {s['rejected']} + quarantined {s['quarantined']}; "
          f"report {args.report.rstrip('/')}/index.html", file=sys.stderr)
    for c in lint["checks"]:
        if not c["passed"]:
            print(f"[audit] lint FAILED {c['name']}: {c['count']} {c['unit']} (of {c['checked']}); e.g. "
                  f"{json.dumps(c['examples'][:2], ensure_ascii=False)}; fix: {c['fix']}", file=sys.stderr)
    print(json.dumps({"report": args.report, "kind": result["kind"], **{k: s[k] for k in ("in", "kept", "rejected", "quarantined")},
                      "lint_passed": lint["passed"], "lint_failed": lint["failed"], **_compare_summary(result.get("compare"))}))
    if args.strict and not lint["passed"]:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    run(main)
