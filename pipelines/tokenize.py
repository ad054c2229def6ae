"""Tokenize TTS audio into 8-codebook Parquet shards with Ray.

    python -m pipelines.tokenize --input MANIFEST_OR_DIR --output OUT --codec tiny|PATH
    python -m pipelines.tokenize --input 's3://bucket/Emilia/EN/*.tar' --format webdataset --output s3://... --codec /models/mimi
    ray job submit --working-dir . -- python -m pipelines.tokenize --input s3://... --output s3://... --codec /models/mimi

list units (driver) -> read + load/validate/resample (tasks) -> encode (actor pool) -> write shards
(one writer). Shards derive from units; finished ones are skipped on rerun, and a rerun over a grown,
changed or shrunk input redoes only the units that changed (docs/incremental-runs.md).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from pipelines.args import (add_codec_args, add_io_args, add_ray_args, add_reader_args, add_shard_args, add_split_args,
                            check_positive, input_units, reader_options, split_config)
from pipelines.cli import require_writable_folder, run
from pipelines.logs import setup_logging
from tokenization.codec_factory import load_codec
from tokenization.schema import SCHEMA_VERSION, SHARDS, file_metadata
from tokenization.tokenize_job import tokenize_job


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.tokenize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_args(p, "manifest (JSONL/CSV/Parquet), corpus folder, tars, HF Parquet or cuts; a file, folder or glob; local or s3://")
    add_reader_args(p)
    add_codec_args(p)
    add_shard_args(p, 50_000, 16, "utterances per encode call")
    p.add_argument("--encoders", type=int, default=0, help="encoder actors (0: one per free CPU, or per GPU with --device cuda)")
    p.add_argument("--encoder-cpus", type=float, default=0.0, help="CPUs reserved per encoder (0: share the node's CPUs out)")
    p.add_argument("--load-cpus", type=float, default=0.25, help="CPUs per reader task")
    add_ray_args(p)
    add_split_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("tokenize", args.output)  # warnings and Ray workers' output: OUT/logs/tokenize.log
    t0 = time.time()
    check_positive(args, "rows_per_shard", "batch_size", "block_rows", "max_duration", "load_cpus")
    opts, split = reader_options(args), split_config(args)
    require_writable_folder("--output", args.output)  # before Ray or the codec start
    units = input_units(args.input, args.format, opts)
    codec = load_codec(args.codec, n_codebooks=args.n_codebooks)  # validates the spec before any work
    config = {
        "codec": codec.info.__dict__, "rows_per_shard": args.rows_per_shard,
        "max_duration": args.max_duration, "schema_version": SCHEMA_VERSION, "format": args.format, "reader": opts.to_dict(), "split": split.to_dict(),
    }
    from pipelines.sharded_ray import run_sharded_job  # imports Ray: not before the checks above

    return run_sharded_job("tokenize", args.output, units, config, (SHARDS,), overwrite=args.overwrite,
                           start=partial(run_pipeline, args, units, codec, split, opts),
                           manifest_extra={"codec": codec.info.__dict__}, t0=t0)


def run_pipeline(args, units, codec, split, opts, run_id, progress):
    from pipelines.ray_setup import init_ray
    from pipelines.sharded_ray import run_job

    resources = init_ray(args.num_cpus)
    cpus = int(resources.get("CPU", 1))
    if args.device.startswith("cuda"):
        encoders, encoder_cpus, gpus = args.encoders or max(1, int(resources.get("GPU", 1))), args.encoder_cpus or 1.0, 1.0
    else:
        # One single-threaded encoder per core; what the readers reserve is shared out among them.
        encoders = args.encoders or max(1, cpus)
        encoder_cpus, gpus = args.encoder_cpus or max(0.1, (cpus - 2 * args.load_cpus) / encoders), 0.0
    job = tokenize_job(opts, args.codec, run_id, target_rate=codec.sample_rate, max_seconds=args.max_duration, split=split,
                       rows_per_shard=args.rows_per_shard, batch_size=args.batch_size, device=args.device,
                       n_codebooks=args.n_codebooks, encoders=encoders, encoder_cpus=encoder_cpus, encoder_gpus=gpus)
    metadata = file_metadata(codec.info, {"run_id": run_id})
    return run_job(job, units, args.output, metadata, progress=progress, read_cpus=args.load_cpus, label="tokenize",
                   block_rows=args.block_rows)


if __name__ == "__main__":
    run(main)
