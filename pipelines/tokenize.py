"""Tokenize TTS audio into 8-codebook Parquet shards with Ray Data.

    python -m pipelines.tokenize --input MANIFEST_OR_DIR --output OUT --codec tiny|PATH
    ray job submit --working-dir . -- python -m pipelines.tokenize --input s3://... --output s3://... --codec /models/mimi

read (driver: listing, plan) -> load/validate/resample (tasks) -> encode (actor pool)
-> assemble + write shards (one writer actor). Finished shards are skipped on rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import ray
from tqdm import tqdm

from pipelines.ray_setup import init_ray
from tokenization.codec import load_codec
from tokenization.manifest import FORMATS, read_inputs
from tokenization.schema import file_metadata
from tokenization.shards import compute_run_id, is_done, plan_shards, prepare_output, write_manifest, write_quarantine
from tokenization.splits import SplitConfig
from tokenization.steps import EncodeBatch, ShardAssembler, load_batch, plan_to_items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.tokenize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="manifest (JSONL/CSV/Parquet), LJSpeech folder or LibriTTS tree; local or s3://")
    p.add_argument("--output", required=True, help="output folder, local or s3://")
    p.add_argument("--codec", default="tiny", help="'tiny' (random-init tiny Mimi) or a local Mimi checkpoint folder")
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--rows-per-shard", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=16, help="utterances per encode call (grouped by length inside)")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds; longer clips are quarantined")
    p.add_argument("--n-codebooks", type=int, default=8)
    p.add_argument("--source", default="", help="dataset name for rows without a `source`")
    p.add_argument("--device", default="cpu", help="codec device: cpu or cuda")
    p.add_argument("--encoders", type=int, default=0, help="encoder actors (0: one per free CPU, or per GPU with --device cuda)")
    p.add_argument("--encoder-cpus", type=float, default=0.0, help="CPUs reserved per encoder (0: share the node's CPUs out)")
    p.add_argument("--load-cpus", type=float, default=0.25)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (ignored on a cluster)")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder written by another run")
    add_split_args(p)
    return p.parse_args(argv)


def add_split_args(p: argparse.ArgumentParser) -> None:
    """`--valid-fraction`, `--test-fraction`, `--split-salt` (shared with pipelines.filter)."""
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of speakers in `valid` (split by speaker hash)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of speakers in `test`")
    p.add_argument("--split-salt", default="", help="changes which speakers land in which split")


def split_config(args: argparse.Namespace) -> SplitConfig:
    try:
        return SplitConfig(args.valid_fraction, args.test_fraction, args.split_salt)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    resources = init_ray(args.num_cpus)

    codec = load_codec(args.codec, n_codebooks=args.n_codebooks)  # validates the spec before any work
    split = split_config(args)
    entries, manifest_bad, n_in = read_inputs(args.input, args.format, args.source)
    config = {
        "codec": codec.info.__dict__, "rows_per_shard": args.rows_per_shard, "batch_size": args.batch_size,
        "max_duration": args.max_duration, "format": args.format, "source": args.source, "split": split.to_dict(),
    }
    run_id = compute_run_id(config, entries)
    prepare_output(args.output, run_id, config, args.overwrite)
    write_quarantine(args.output, "manifest", [q.__class__(**{**q.to_dict(), "run_id": run_id}) for q in manifest_bad])

    plans = plan_shards(entries, args.rows_per_shard, args.batch_size)
    todo = [p for p in plans if not is_done(args.output, p.name)]
    print(f"[tokenize] run {run_id}: {n_in} input rows, {len(manifest_bad)} quarantined from the listing, "
          f"{len(plans)} shards ({len(plans) - len(todo)} already done)", file=sys.stderr)

    t_pipe = time.time()
    if todo:
        run_pipeline(args, todo, run_id, codec, resources, split)
    pipeline_s = time.time() - t_pipe

    manifest = write_manifest(args.output, run_id, n_in, len(manifest_bad), {"codec": codec.info.__dict__})
    c = manifest["counts"]
    elapsed = time.time() - t0
    summary = {
        "output": args.output, "run_id": run_id, "rows_in": c["in"], "kept": c["kept"], "quarantined": c["quarantined"],
        "hours": c["hours"], "shards_written": len(todo), "shards_skipped": len(plans) - len(todo),
        "elapsed_s": round(elapsed, 2), "pipeline_s": round(pipeline_s, 2),
        "audio_seconds_per_second": round(c["hours"] * 3600 / max(pipeline_s, 1e-9), 2),
    }
    print(f"[tokenize] rows in {c['in']} = kept {c['kept']} + quarantined {c['quarantined']}"
          f"{'' if 'error' not in c else '  MISMATCH: ' + c['error']}", file=sys.stderr)
    print(json.dumps(summary))
    if "error" in c:
        raise SystemExit(c["error"])
    return summary


def run_pipeline(args, todo, run_id, codec, resources, split: SplitConfig) -> None:
    cpus = int(resources.get("CPU", 1))
    encoder_cpus = args.encoder_cpus or 1.0
    if args.device.startswith("cuda"):
        encoders = args.encoders or max(1, int(resources.get("GPU", 1)))
        gpu_args = {"num_gpus": 1}
    else:
        # One single-threaded encoder per core; what the loaders reserve is shared out among them.
        encoders = args.encoders or max(1, cpus)
        encoder_cpus = args.encoder_cpus or max(0.1, (cpus - 2 * args.load_cpus) / encoders)
        gpu_args = {}
    metadata = file_metadata(codec.info, {"run_id": run_id})
    items = plan_to_items(todo)

    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(load_batch, fn_kwargs={"target_rate": codec.sample_rate, "max_seconds": args.max_duration}, num_cpus=args.load_cpus)
    ds = ds.map_batches(
        EncodeBatch, batch_size=1, batch_format="pyarrow",
        fn_constructor_kwargs={"codec_spec": args.codec, "run_id": run_id, "device": args.device, "n_codebooks": args.n_codebooks,
                               "split": split.to_dict()},
        compute=ray.data.ActorPoolStrategy(size=encoders), num_cpus=encoder_cpus, **gpu_args,
    )
    ds = ds.map_batches(
        ShardAssembler, batch_size=None, batch_format="pyarrow",
        fn_constructor_kwargs={"output": args.output, "expected_rows": {p.index: p.n_rows for p in todo}, "metadata": metadata, "n_codebooks": args.n_codebooks},
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0,
    )
    total = sum(p.n_rows for p in todo)
    with tqdm(total=total, unit="utt", desc="tokenize", file=sys.stderr, mininterval=2) as bar:
        shards = 0
        for summary in ds.iter_rows():
            shards += len(json.loads(summary["shards_written"]))
            bar.update(summary["rows"])
            bar.set_postfix(shards=f"{shards}/{len(todo)}", audio_s=f"{summary['audio_seconds']:.0f}")


if __name__ == "__main__":
    main()
