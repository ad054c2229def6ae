"""Near-duplicates across corpora and runs, and eval leakage, as Ray tasks ([docs/dedup.md](../docs/dedup.md)).

    python -m pipelines.dedup --input OUT [--input OUT2 ...] --output DEDUP [--against EVAL ...]
        [--keep first|best] [--text-dups report|drop] [--near-jaccard 0.2] [--ngram 13]

index each shard file (tasks) -> pairs per hash part (tasks) -> fetch the paired rows (tasks) -> verify,
cluster, decide (driver) -> DEDUP/decisions/*.parquet, DEDUP/_summary.json. A rerun indexes only new and
changed shard files and compares only their rows against the stored index (`filtering/dedup/job.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from filtering.dedup.index import DedupSettings
from filtering.dedup.job import DedupOptions, run_dedup
from pipelines.args import add_ray_args, check_positive
from pipelines.cli import require_writable_folder, run
from pipelines.logs import setup_logging
from tokenization.dialogue_schema import detect_kind

_DEFAULTS = DedupSettings()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.dedup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", action="append", required=True, help="a tokenize or filter output folder (repeat for several)")
    p.add_argument("--output", required=True, help="the dedup folder, local or s3://")
    p.add_argument("--against", action="append", default=[], help="an eval output folder whose rows training must not hold")
    p.add_argument("--keep", choices=("first", "best"), default="first",
                   help="a cluster's kept row: first in --input order, or best (highest dnsmos_ovrl, else lowest wer)")
    p.add_argument("--text-dups", choices=("report", "drop"), default="report",
                   help="the same transcript by another recording: reported and kept, or dropped")
    p.add_argument("--near-jaccard", type=float, default=_DEFAULTS.near_jaccard,
                   help="fingerprint Jaccard at which two rows are the same recording")
    p.add_argument("--ngram", type=int, default=_DEFAULTS.ngram, help="words of a transcript n-gram shared with an eval row")
    p.add_argument("--parts", type=int, default=8, help="hash parts of the pair search (a task each)")
    p.add_argument("--overwrite", action="store_true", help="replace a dedup folder written with other settings")
    add_ray_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("dedup", args.output)
    t0 = time.time()
    check_positive(args, "near_jaccard", "ngram", "parts")
    require_writable_folder("--output", args.output)
    for folder in args.input + args.against:
        detect_kind(folder)  # not a tokenize or filter output: one line, before Ray starts
    from pipelines.ray_setup import init_ray

    init_ray(args.num_cpus)
    settings = DedupSettings(near_jaccard=args.near_jaccard, ngram=args.ngram)
    summary = run_dedup(args.input, args.output, args.against, settings,
                        DedupOptions(keep=args.keep, text_dups=args.text_dups, parts=args.parts), ray_map, args.overwrite)
    summary["elapsed_s"] = round(time.time() - t0, 2)
    print(json.dumps(summary))
    return summary


def ray_map(fn, args: list[tuple], label: str = "") -> list:
    """`fn(*a)` for each `a` as Ray tasks, with a progress bar; results in order."""
    import ray
    from tqdm import tqdm

    if not args:
        return []
    task = ray.remote(num_cpus=1)(fn)
    refs = [task.remote(*a) for a in args]
    pending = list(refs)
    with tqdm(total=len(refs), unit="task", desc=f"dedup {label}", file=sys.stderr, mininterval=2) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
    return ray.get(refs)


if __name__ == "__main__":
    run(main)
