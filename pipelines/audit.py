"""Audit a tokenize or filter output folder (local or s3://) into an HTML/PNG/JSON report, with dataset lint.

    python -m pipelines.audit OUT --report REPORT_DIR [--tokenizer tokenizer.json] [--strict]
    python -m pipelines.audit RUN_B --compare RUN_A --report REPORT_DIR      # what changed between two filter runs
    python -m pipelines.audit OUT --report REPORT_DIR --codec tiny|PATH      # play clips stored only as codes
    python -m pipelines.audit OUT --report REPORT_DIR --dedup DEDUP          # the clusters pipelines.dedup found

`--strict` exits 1 when a lint check fails (CI for data teams); 0 otherwise.
The scan runs as Ray tasks, one per data file (a folder of one file is read in this process).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque

from filtering.audit import AuditOptions, ListenOptions, audit
from filtering.audit.lint import LintConfig
from filtering.audit.partial import FilePartial, LocalRunner, Runner, ScanSpec, locate, merge_parts, reduce_part, scan_file
from filtering.audit.read import RowFact
from pipelines.args import add_ray_args
from pipelines.cli import require_input, run

HASH_PARTS = 8  # tasks that group the keyed rows (duplicates, leakage), each over its hash part of every file
FILES_IN_FLIGHT = 4  # per CPU: file tasks submitted ahead of the partial being merged (the driver holds their partials)


def _scan_task(spec: ScanSpec, index: int, status: str, path: str) -> tuple:
    p, keyed = scan_file(spec, index, status, path)
    return (p, *keyed)


class RayRunner(Runner):
    """A Ray task per data file returns its partial (merged here in file order, a bounded window ahead) and its
    keyed rows per hash part (left in the object store); a task per hash part groups them."""

    parts = HASH_PARTS

    def __init__(self, cpus: float):
        import ray

        self.ray, self.window = ray, max(2, int(cpus * FILES_IN_FLIGHT))
        self.scan_remote = ray.remote(_scan_task)
        self.reduce_remote, self.locate_remote = ray.remote(reduce_part), ray.remote(locate)

    def scan(self, spec: ScanSpec, files: list[tuple[str, str]]) -> tuple[FilePartial, dict]:
        ray, spec_ref = self.ray, self.ray.put(spec)
        merged, pending, keyed = FilePartial(), deque(), []
        for i, (status, path) in enumerate(files):
            if len(pending) >= self.window:
                merged.merge(ray.get(pending.popleft()))
            refs = self.scan_remote.options(num_returns=1 + spec.parts).remote(spec_ref, i, status, path)
            pending.append(refs[0])
            keyed.append(refs[1:])
        while pending:
            merged.merge(ray.get(pending.popleft()))
        groups = ray.get([self.reduce_remote.remote(*[k[part] for k in keyed]) for part in range(spec.parts)])
        return merged, merge_parts(groups)

    def locate(self, spec: ScanSpec, files: list[tuple[str, str]], ids: list[str]) -> list[RowFact]:
        spec_ref, ids_ref = self.ray.put(spec), self.ray.put(ids)
        found = self.ray.get([self.locate_remote.remote(spec_ref, status, path, ids_ref) for status, path in files])
        return [f for fs in found for f in fs]


def runner_for(folder: str, num_cpus: int | None) -> Runner:
    """Ray tasks, unless the folder holds one data file (a cluster for one read is only overhead)."""
    from filtering.audit.read import data_files
    from tokenization.dialogue_schema import detect_kind

    if len(data_files(folder, detect_kind(folder))) < 2:
        return LocalRunner()
    from pipelines.ray_setup import init_ray

    return RayRunner(init_ray(num_cpus).get("CPU", 1))


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
    p.add_argument("--dedup", default=None, metavar="DEDUP", help="a pipelines.dedup --output folder: the duplicates section "
                   "(largest clusters with players of two members, hours dropped per source, eval overlaps)")
    add_ray_args(p)
    args = p.parse_args(argv)
    require_input("FOLDER", args.folder, "pass the --output folder of pipelines.tokenize or pipelines.filter")
    if args.compare:
        require_input("--compare", args.compare, "pass an earlier pipelines.filter --output folder")
    if args.dedup:
        require_input("--dedup", args.dedup, "pass the --output folder of pipelines.dedup")
    cfg = LintConfig(args.max_user_audio_s, args.talker_max_frames, args.min_words_per_s, args.max_words_per_s,
                     d.min_rate_duration_s, args.frames_tolerance, args.tokenizer)
    listen = ListenOptions(args.codec, args.max_audio_examples, int(args.max_audio_mb * 2**20), args.audio_manifest)
    runner = runner_for(args.folder, args.num_cpus)
    result = audit(args.folder, args.report, cfg, AuditOptions(listen, args.compare, args.dedup), runner)
    s, lint = result["stages"][0], result["lint"]
    print(f"[audit] {result['kind']}: in {s['in']} = kept {s['kept']} + rejected {s['rejected']} + quarantined {s['quarantined']}; "
          f"report {args.report.rstrip('/')}/index.html", file=sys.stderr)
    for c in lint["checks"]:
        if not c["passed"]:
            print(f"[audit] lint FAILED {c['name']}: {c['count']} {c['unit']} (of {c['checked']}); e.g. "
                  f"{json.dumps(c['examples'][:2], ensure_ascii=False)}; fix: {c['fix']}", file=sys.stderr)
    print(json.dumps({"report": args.report, "kind": result["kind"], **{k: s[k] for k in ("in", "kept", "rejected", "quarantined")},
                      "lint_passed": lint["passed"], "lint_failed": lint["failed"],
                      "scan": "ray" if isinstance(runner, RayRunner) else "local", **_compare_summary(result.get("compare"))}))
    if args.strict and not lint["passed"]:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    run(main)
