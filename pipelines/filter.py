"""Filter spoken-dialogue data (or TTS token shards) by Whisper WER with Ray Data.

    python -m pipelines.filter --input DIALOGUES.jsonl --output OUT --asr tiny.en [--max-wer 0.10] [--codec tiny|PATH]
    python -m pipelines.filter --input TOKENIZE_OUT --audio-manifest TTS_MANIFEST --output OUT --asr faster-whisper:PATH
    ray job submit --working-dir . -- python -m pipelines.filter --input s3://... --output s3://... --asr faster-whisper:/models/ct2

read + plan (driver) -> load/validate (tasks) -> ASR + score + rules (actor pool, model loaded
once per actor) -> codec for kept assistant turns (actor pool) -> one shard writer.
Finished shards are skipped on rerun; rows in = kept + rejected + quarantined.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import dataclass

import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from filtering.dialogue_manifest import read_dialogues
from filtering.dialogue_schema import DIALOGUE_SCHEMA_VERSION
from filtering.rules import Rules
from filtering.shards import KEPT, REJECTS, FilterShardWriter, write_filter_manifest
from filtering.steps import EncodeKept, ScoreBatch, load_dialogue_batch, load_tts_batch
from pipelines.ray_setup import init_ray
from pipelines.tokenize import add_split_args, split_config
from tokenization import storage
from tokenization.codec import load_codec
from tokenization.manifest import read_inputs
from tokenization.schema import QuarantineRow, file_metadata
from tokenization.shards import SHARDS, compute_run_id, is_done, plan_shards, prepare_output, write_quarantine
from tokenization.splits import SplitConfig, assign_split
from tokenization.steps import plan_to_items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.filter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="dialogue manifest (JSONL/JSON/Parquet, native or LLaMA-Omni layout) or a tokenize output folder")
    p.add_argument("--output", required=True, help="output folder, local or s3://")
    p.add_argument("--asr", default="tiny.en", help="tiny.en | faster-whisper:PATH | openai-whisper:PATH")
    p.add_argument("--max-wer", type=float, default=None, help="overrides the rules' max_wer (default 0.10)")
    p.add_argument("--rules", default=None, help="JSON/YAML file with filtering.rules.Rules fields")
    p.add_argument("--codec", default="tiny", help="codec for kept assistant turns: 'tiny' or a local checkpoint folder")
    p.add_argument("--audio-manifest", default=None, help="TTS mode: the tokenize job's input manifest (source audio)")
    p.add_argument("--rows-per-shard", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8, help="records per ASR/codec call")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds; longer clips are quarantined")
    p.add_argument("--n-codebooks", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--asr-actors", type=int, default=0, help="0: one per free CPU (or per GPU with --device cuda)")
    p.add_argument("--asr-cpus", type=float, default=1.0)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (ignored on a cluster)")
    p.add_argument("--overwrite", action="store_true")
    add_split_args(p)  # TTS mode keeps the token shards' `split`; rows without one get it here
    return p.parse_args(argv)


@dataclass
class _Entry:
    """A listing entry for `compute_run_id` in TTS mode."""

    utt_id: str
    audio_path: str

    def to_dict(self) -> dict:
        return {"utt_id": self.utt_id, "audio_path": self.audio_path}


def _tts_inputs(args, split: SplitConfig) -> tuple[list[dict], list[QuarantineRow]]:
    """Token rows of a tokenize output folder, each joined with its source audio path."""
    if not args.audio_manifest:
        raise SystemExit("--input is a token-shard folder: pass --audio-manifest (the tokenize job's input)")
    entries, _, _ = read_inputs(args.audio_manifest)
    audio = {e.utt_id: e.audio_path for e in entries}
    rows = []
    for f in storage.list_files(storage.join(args.input, SHARDS), ".parquet"):
        with storage.open_input(f) as fh:
            for r in pq.read_table(fh).to_pylist():
                r["split"] = r.get("split") or assign_split(r["speaker"], r["utt_id"], split)  # shards written before splits
                rows.append({**r, "audio_path": audio.get(r["utt_id"], "")})
    return rows, []


def _clear(output: str) -> None:
    for sub in (KEPT, REJECTS):
        for f in storage.list_files(storage.join(output, sub)):
            fs, path = storage.filesystem(f)
            fs.delete_file(path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    rules = Rules.load(args.rules) if args.rules else Rules()
    if args.max_wer is not None:
        rules = Rules.from_dict({**rules.to_dict(), "max_wer": args.max_wer})
    tts = storage.exists(storage.join(args.input, SHARDS))
    split = split_config(args)
    resources = init_ray(args.num_cpus)
    codec = load_codec(args.codec, n_codebooks=args.n_codebooks)  # validates the spec before any work

    if tts:
        rows, bad = _tts_inputs(args, split)
        listing = [_Entry(r["utt_id"], r["audio_path"]) for r in rows]
    else:
        rows, bad = read_dialogues(args.input)
        listing = rows
    n_in = len(rows) + len(bad)
    config = {"job": "filter", "kind": "tts" if tts else "dialogue", "asr": args.asr, "rules": rules.to_dict(),
              "codec": codec.info.__dict__, "rows_per_shard": args.rows_per_shard, "batch_size": args.batch_size,
              "max_duration": args.max_duration, "schema_version": DIALOGUE_SCHEMA_VERSION,
              "split": split.to_dict()}
    run_id = compute_run_id(config, listing)
    if args.overwrite:
        _clear(args.output)
    prepare_output(args.output, run_id, config, args.overwrite)
    write_quarantine(args.output, "manifest", [QuarantineRow(**{**q.to_dict(), "run_id": run_id}) for q in bad])

    plans = plan_shards(rows, args.rows_per_shard, args.batch_size)
    todo = [p for p in plans if not is_done(args.output, p.name)]
    print(f"[filter] run {run_id}: {n_in} input rows, {len(bad)} quarantined from the listing, "
          f"{len(plans)} shards ({len(plans) - len(todo)} already done)", file=sys.stderr)
    if todo:
        run_pipeline(args, todo, run_id, rules, codec, resources, "tts" if tts else "dialogue", split.to_dict())

    manifest = write_filter_manifest(args.output, run_id, n_in, len(bad),
                                     {"asr": args.asr, "rules": rules.to_dict(), "codec": codec.info.__dict__,
                                      "kind": "tts" if tts else "dialogue"})
    c = manifest["counts"]
    summary = {"output": args.output, "run_id": run_id, "rows_in": c["in"], "kept": c["kept"], "rejected": c["rejected"],
               "quarantined": c["quarantined"], "shards_written": len(todo), "shards_skipped": len(plans) - len(todo),
               "elapsed_s": round(time.time() - t0, 2)}
    print(f"[filter] rows in {c['in']} = kept {c['kept']} + rejected {c['rejected']} + quarantined {c['quarantined']}"
          f"{'' if 'error' not in c else '  MISMATCH: ' + c['error']}", file=sys.stderr)
    print(json.dumps(summary))
    if "error" in c:
        raise SystemExit(c["error"])
    return summary


def _tts_items(plans) -> list[dict]:
    items = []
    for plan in plans:
        pos = 0
        for b, batch in enumerate(plan.batches):
            items.append({"shard": plan.index, "batch": b, "first_pos": pos, "entries": pickle.dumps(batch)})
            pos += len(batch)
    return items


def run_pipeline(args, todo, run_id, rules, codec, resources, kind: str, split: dict) -> None:
    cpus = int(resources.get("CPU", 1))
    gpu = {"num_gpus": 1} if args.device.startswith("cuda") else {}
    actors = args.asr_actors or (max(1, int(resources.get("GPU", 1))) if gpu else max(1, int((cpus - 0.5) // args.asr_cpus)))
    metadata = file_metadata(codec.info, {"run_id": run_id, "job": "filter", "kind": kind, "asr": args.asr,
                                          "rules": json.dumps(rules.to_dict(), sort_keys=True),
                                          "dialogue_schema_version": DIALOGUE_SCHEMA_VERSION})
    items = plan_to_items(todo) if kind == "dialogue" else _tts_items(todo)

    ds = ray.data.from_items(items, override_num_blocks=len(items))
    if kind == "dialogue":
        ds = ds.map(load_dialogue_batch, fn_kwargs={"run_id": run_id, "max_seconds": args.max_duration, "split": split}, num_cpus=0.25)
    else:
        ds = ds.map(load_tts_batch, fn_kwargs={"max_seconds": args.max_duration}, num_cpus=0.25)
    ds = ds.map_batches(ScoreBatch, batch_size=1, batch_format="numpy",
                        fn_constructor_kwargs={"asr": args.asr, "rules": rules.to_dict(), "device": args.device, "batch_size": args.batch_size},
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=args.asr_cpus, **gpu)
    if kind == "dialogue":
        ds = ds.map_batches(EncodeKept, batch_size=1, batch_format="numpy",
                            fn_constructor_kwargs={"codec": args.codec, "device": args.device, "n_codebooks": args.n_codebooks},
                            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
    ds = ds.map_batches(FilterShardWriter, batch_size=None, batch_format="numpy",
                        fn_constructor_kwargs={"output": args.output, "expected_rows": {p.index: p.n_rows for p in todo},
                                               "kind": kind, "metadata": metadata, "n_codebooks": args.n_codebooks},
                        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0)
    total = sum(p.n_rows for p in todo)
    with tqdm(total=total, unit="row", desc="filter", file=sys.stderr, mininterval=2) as bar:
        for summary in ds.iter_rows():
            bar.update(summary["rows"])


if __name__ == "__main__":
    main()
