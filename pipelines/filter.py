"""Filter spoken-dialogue data (or TTS token shards) by Whisper WER with Ray.

    python -m pipelines.filter --input DIALOGUES.jsonl --output OUT --asr tiny.en [--max-wer 0.10] [--codec tiny|PATH]
    python -m pipelines.filter --input TOKENIZE_OUT --audio-manifest TTS_MANIFEST --output OUT --asr faster-whisper:PATH
    ray job submit --working-dir . -- python -m pipelines.filter --input s3://... --output s3://... --asr faster-whisper:/models/ct2

list units (driver) -> read + load/validate (tasks) -> [--quality dnsmos,vad: DNSMOS / Silero VAD (actor pool)]
-> ASR + score + rules (actor pool, model loaded once per actor) -> codec for kept assistant turns (actor pool) -> one shard writer.
Finished shards are skipped on rerun; rows in = kept + rejected + quarantined.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

from filtering.asr import resolve_spec
from filtering.filter_job import filter_job
from filtering.rules import Rules
from pipelines.args import (add_asr_args, add_codec_args, add_io_args, add_quality_args, add_ray_args, add_reader_args,
                            add_shard_args, add_split_args, check_positive, input_units, quality_scorers, reader_options,
                            split_config)
from pipelines.cli import require_at_least, require_writable_folder, run
from pipelines.logs import setup_logging
from tokenization import storage
from tokenization.codec_factory import load_codec
from tokenization.dialogue_schema import DIALOGUE, DIALOGUE_SCHEMA_VERSION, TTS, is_tokenize_output
from tokenization.errors import UserError
from tokenization.schema import KEPT, REJECTS, SHARDS, file_metadata
from tokenization.units import Unit

TABLES = (KEPT, REJECTS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.filter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_args(p, "dialogue manifest (JSONL/JSON/Parquet, native or LLaMA-Omni layout) or a tokenize output folder")
    add_reader_args(p)  # TTS mode: how to read --audio-manifest
    add_asr_args(p)
    add_quality_args(p)
    p.add_argument("--max-wer", type=float, default=None, help="overrides the rules' max_wer (default 0.10)")
    p.add_argument("--rules", default=None, help="JSON/YAML file with filtering.rules.Rules fields")
    p.add_argument("--audio-manifest", default=None, help="TTS mode: the tokenize job's input manifest (source audio)")
    add_codec_args(p, " (encodes the assistant turns of kept dialogues)")
    add_shard_args(p, 2000, 8, "records per ASR/codec call")
    p.add_argument("--asr-actors", type=int, default=0, help="0: one per free CPU (or per GPU with --device cuda)")
    p.add_argument("--asr-cpus", type=float, default=1.0)
    p.add_argument("--codec-actors", type=int, default=0, help="0: one per two ASR actors")
    add_ray_args(p)
    add_split_args(p)  # TTS mode keeps the token shards' `split`; rows without one get it here
    return p.parse_args(argv)


def token_shard_units(folder: str, opts) -> list[Unit]:
    """TTS mode: one unit per token-shard file of a tokenize output (a paged listing, no file opened)."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(storage.join(folder, SHARDS))
    prefix = "s3://" if folder.startswith("s3://") else ""
    infos = sorted((i for i in fs.get_file_info(pafs.FileSelector(path, recursive=False))
                    if i.type == pafs.FileType.File and i.path.endswith(".parquet")), key=lambda i: i.path)
    return [Unit(uri=prefix + i.path, fmt="token-shards", size=i.size or 0, version=str(i.mtime_ns or "")) for i in infos]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("filter", args.output)  # warnings and Ray workers' output: OUT/logs/filter.log
    t0 = time.time()
    check_positive(args, "rows_per_shard", "batch_size", "block_rows", "max_duration", "asr_cpus", "quality_cpus")
    require_at_least("--max-wer", args.max_wer, 0.0)
    opts, split, quality = reader_options(args), split_config(args), quality_scorers(args)
    try:
        rules = Rules.load(args.rules) if args.rules else Rules()
        if args.max_wer is not None:
            rules = Rules.from_dict({**rules.to_dict(), "max_wer": args.max_wer})
        rules.check_quality(quality)  # a rule on a score this run does not compute: fail here, not on a worker
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"--rules {args.rules}: {exc}") from exc
    require_writable_folder("--output", args.output)  # before Ray or any model starts
    tts = is_tokenize_output(args.input)
    if tts:
        if not args.audio_manifest:
            raise UserError(f"--input {args.input} is a token-shard folder: pass --audio-manifest (the tokenize job's input)")
        audio_units = input_units(args.audio_manifest, args.format, opts)  # tasks read them, the driver lists them
        units = input_units(args.input, args.format, opts, lister=token_shard_units)
    else:
        audio_units = []
        units = input_units(args.input, "dialogue", opts)
    codec = load_codec(args.codec, n_codebooks=args.n_codebooks)  # validates the spec before any work
    # once, here: every ASR actor (and a rerun) uses the same backend, and the resolved spec is in the run id
    args.asr = resolve_spec(args.asr, args.device, backend=args.asr_backend)
    kind = TTS if tts else DIALOGUE
    config = {"job": "filter", "kind": kind, "asr": args.asr, "quality": list(quality), "rules": rules.to_dict(),
              "codec": codec.info.__dict__, "rows_per_shard": args.rows_per_shard,
              "max_duration": args.max_duration, "schema_version": DIALOGUE_SCHEMA_VERSION, "reader": opts.to_dict(),
              "split": split.to_dict()}
    from pipelines.sharded_ray import run_sharded_job  # imports Ray: not before the checks above

    return run_sharded_job("filter", args.output, units, config, TABLES, overwrite=args.overwrite,
                           start=partial(run_pipeline, args, units, audio_units, rules, codec, kind, split, opts, quality),
                           manifest_extra={"job": "filter", "asr": args.asr, "quality": list(quality),
                                           "rules": rules.to_dict(), "codec": codec.info.__dict__, "kind": kind},
                           t0=t0)


def run_pipeline(args, units, audio_units, rules, codec, kind: str, split, opts, quality: tuple[str, ...], run_id, progress):
    from pipelines.ray_setup import init_ray
    from pipelines.sharded_ray import run_job

    resources = init_ray(args.num_cpus)
    cpus = int(resources.get("CPU", 1))
    gpu = args.device.startswith("cuda")
    budget = cpus - 0.5  # the rest: read/load tasks and the codec
    # With --quality, DNSMOS (several times Whisper tiny.en per audio second on CPU) gets about half the budget.
    q_actors = 0 if not quality else args.quality_actors or (
        max(1, int(resources.get("GPU", 1)) // 2) if gpu else max(1, int(budget / 2 // args.quality_cpus)))
    actors = args.asr_actors or (max(1, int(resources.get("GPU", 1))) if gpu else
                                 max(1, int((budget - q_actors * args.quality_cpus) // args.asr_cpus)))
    job = filter_job(kind, opts, run_id, asr=args.asr, rules=rules, codec=args.codec, max_seconds=args.max_duration,
                     split=split, rows_per_shard=args.rows_per_shard, batch_size=args.batch_size, device=args.device,
                     n_codebooks=args.n_codebooks, asr_actors=actors, asr_cpus=args.asr_cpus,
                     codec_actors=args.codec_actors or max(1, actors // 2),
                     gpus=(1 / 3 if quality else 0.5) if gpu else 0.0,  # ASR, codec (and quality) actors share a GPU
                     audio_units=tuple(audio_units), quality=quality, quality_actors=max(1, q_actors),
                     quality_cpus=args.quality_cpus)
    metadata = file_metadata(codec.info, {"run_id": run_id, "job": "filter", "kind": kind, "asr": args.asr,
                                          "quality": ",".join(quality),
                                          "rules": json.dumps(rules.to_dict(), sort_keys=True),
                                          "dialogue_schema_version": DIALOGUE_SCHEMA_VERSION})
    return run_job(job, units, args.output, metadata, progress=progress, read_cpus=0.25, label="filter", block_rows=args.block_rows)


if __name__ == "__main__":
    run(main)
