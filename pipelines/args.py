"""CLI flags shared by the entry points, defined once (no pipeline imports another).

    p = argparse.ArgumentParser(...)
    add_io_args(p, input_help="...")
    add_reader_args(p)                      # --format, --audio-column, ..., --unit-bytes
    add_codec_args(p); add_ray_args(p); add_split_args(p); add_asr_args(p)
    args = p.parse_args(argv)
    opts = reader_options(args)             # tokenization.units.ReaderOptions
"""

from __future__ import annotations

import argparse

from tokenization import storage
from tokenization.engine.jobs import BLOCK_BYTES, BLOCK_ROWS
from tokenization.errors import UserError
from tokenization.splits import SplitConfig
from tokenization.paths import GLOB_CHARS
from tokenization.readers.registry import formats, keyed_listing, list_units
from tokenization.units import ReaderOptions, Unit


def add_io_args(p: argparse.ArgumentParser, input_help: str) -> None:
    p.add_argument("--input", required=True, help=input_help)
    p.add_argument("--output", required=True, help="output folder, local or s3://")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder written by another run")


def add_reader_args(p: argparse.ArgumentParser, default_format: str = "auto") -> None:
    """Flags mapped onto `ReaderOptions` (see `reader_options`)."""
    p.add_argument("--format", default=default_format, choices=formats(), help="input layout (auto: from the name)")
    p.add_argument("--source", default="", help="dataset name for rows without a `source`")
    p.add_argument("--audio-column", default="audio", help="HF Parquet: the audio struct column")
    p.add_argument("--text-column", default="", help="transcript column ('' = auto-detect)")
    p.add_argument("--speaker-column", default="", help="speaker column ('' = auto-detect)")
    p.add_argument("--id-column", default="", help="id column ('' = auto-detect, else a stable hash)")
    p.add_argument("--audio-root", default="", help="relative audio paths resolve here (default: the manifest's folder)")
    p.add_argument("--allow-outside-paths", action="store_true", help="allow relative audio paths that leave the manifest's folder")
    p.add_argument("--unit-bytes", type=int, default=64 << 20, help="big manifests are read in byte ranges of about this size")


def reader_options(args: argparse.Namespace) -> ReaderOptions:
    if args.unit_bytes < 1:
        raise UserError(f"--unit-bytes {args.unit_bytes}: must be >= 1")
    return ReaderOptions(source=args.source, audio_root=args.audio_root, audio_column=args.audio_column,
                         text_column=args.text_column, speaker_column=args.speaker_column, id_column=args.id_column,
                         unit_bytes=args.unit_bytes, allow_outside_paths=args.allow_outside_paths)


def add_codec_args(p: argparse.ArgumentParser, help_suffix: str = "") -> None:
    p.add_argument("--codec", default="tiny", help="'tiny' (random-init tiny Mimi) or a local Mimi checkpoint folder" + help_suffix)
    p.add_argument("--n-codebooks", type=int, default=8)
    p.add_argument("--device", default="cpu", help="model device: cpu or cuda")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds; longer clips are quarantined")


def add_shard_args(p: argparse.ArgumentParser, rows_per_shard: int, batch_size: int, batch_help: str) -> None:
    p.add_argument("--rows-per-shard", type=int, default=rows_per_shard, help="rows per output shard (a unit may give several)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    p.add_argument("--block-rows", type=int, default=BLOCK_ROWS,
                   help=f"rows per Ray Data block at most, in whole batches (also capped at {BLOCK_BYTES >> 20} MiB of loaded audio); "
                        "fewer blocks cost less scheduling, more spread one unit over more workers; a job with fewer units "
                        "than twice a step's actors runs a block per batch; output is the same")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} {value}: must be > 0")


def add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (ignored on a cluster)")


def add_split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of speakers in `valid` (split by speaker hash)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of speakers in `test`")
    p.add_argument("--split-salt", default="", help="changes which speakers land in which split")


def split_config(args: argparse.Namespace) -> SplitConfig:
    try:
        return SplitConfig(args.valid_fraction, args.test_fraction, args.split_salt)
    except ValueError as exc:
        raise UserError(f"--valid-fraction/--test-fraction: {exc}") from exc


def add_asr_args(p: argparse.ArgumentParser) -> None:
    from filtering.asr import BACKEND_CHOICES

    p.add_argument("--asr", default="tiny.en", help="tiny.en | faster-whisper:PATH | openai-whisper:PATH")
    p.add_argument("--asr-backend", choices=BACKEND_CHOICES, default="default",
                   help="backend of a bare --asr model: default (faster-whisper int8 on CPU, float16 on GPU: the same "
                        "decisions everywhere) or auto (the fastest here, measured once per CPU)")


def add_quality_args(p: argparse.ArgumentParser) -> None:
    """`--quality dnsmos,vad` (filtering.quality) and its actor pool."""
    p.add_argument("--quality", default="", help="audio-quality scorers, comma-separated: dnsmos, vad (default: none)")
    p.add_argument("--quality-actors", type=int, default=0, help="0: about half the CPU budget (one per two GPUs, at least one, with --device cuda)")
    p.add_argument("--quality-cpus", type=float, default=0.5, help="CPUs per quality actor (its onnxruntime threads, at least 1)")


def quality_scorers(args: argparse.Namespace) -> tuple[str, ...]:
    from filtering.quality import parse_quality

    try:
        return parse_quality(args.quality)
    except ValueError as exc:
        raise UserError(f"--quality {args.quality}: {exc}") from exc


def input_units(uri: str, fmt: str, opts: ReaderOptions, lister=None) -> list[Unit]:
    """The driver's unit listing of `--input` (files, row groups, byte ranges: never rows).

    `--format auto` picks the layout from the name (`tokenization.readers.registry.list_units`); `lister` lists
    what is no corpus layout (a tokenize output's shards). A missing input or an unknown layout is a `UserError`
    naming `--input`.
    """
    if not any(c in uri for c in GLOB_CHARS) and not storage.exists(uri):
        raise UserError(f"--input {uri}: no such file or folder")
    try:
        units = storage.retrying(lambda: keyed_listing(uri, lister, opts) if lister is not None else list_units(uri, fmt, opts),
                                 uri)  # a throttled listing: again, whole
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UserError(f"--input {uri}: {exc}") from exc
    if not units:
        raise UserError(f"--input {uri}: no input files found (--format {fmt})")
    return units
