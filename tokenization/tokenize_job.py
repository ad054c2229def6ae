"""The tokenize job for the sharded-job engine (`tokenization/engine/`): its steps, its sink, `tokenize_job`; no Ray.

    read   (task)   a unit -> `Utterance` / `QuarantineRow` records (`tokenization.readers.registry.read_unit`)
    load   (task)   decode, validate and resample one utterance's audio (`tokenization.audio.read_ref`)
    encode (actors) `EncodeStep`: the codec loaded once per actor, one call per batch
    write           `TokenSink`: token rows -> `shards/`

`pipelines/tokenize.py` runs them on Ray; `tokenization.engine.local_run.run_local` runs them in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa

from tokenization.audio import read_ref, resample
from tokenization.codec import SpeechCodec
from tokenization.codec_factory import load_codec
from tokenization.engine.jobs import Item, JobSpec, Step
from tokenization.fingerprint import fingerprint
from tokenization.schema import N_CODEBOOKS, SHARDS, codes_to_arrow, meta_json, sha1_hex, token_schema
from tokenization.splits import SplitConfig, assign_split
from tokenization.readers.registry import read_unit
from tokenization.units import ReaderOptions, Utterance


def utterance_id(rec: Utterance) -> str:
    return rec.utt_id


def load_utterance(item: Item, target_rate: int, max_seconds: float | None) -> None:
    """Task step: `item.row` (an Utterance) -> its row fields; `item.audio` = float32 samples at `target_rate`.

    Raises:
        BadAudio: the reason names the file (or `<embedded audio>` and the utterance's `where`).
    """
    utt: Utterance = item.row
    item.file = utt.audio.name if utt.audio.path else (utt.where or item.file)
    samples, rate = read_ref(utt.audio, max_seconds)
    wave = resample(samples, rate, target_rate)
    item.audio = wave
    item.row = {"utt_id": utt.utt_id, "source": utt.source, "speaker": utt.speaker, "language": utt.language,
                "text": utt.text, "audio_sha1": sha1_hex(np.asarray(samples, np.float32).tobytes()),
                "meta": meta_json(utt.meta), "audio_fp": fingerprint(samples, rate)}


class EncodeStep:
    """Actor step: the codec loaded once; each call encodes the ok items of one batch.

    Each row's `split` comes from its speaker (or utt_id) hash under `split`.
    """

    def __init__(self, codec: str | SpeechCodec, run_id: str, device: str = "cpu", n_codebooks: int = N_CODEBOOKS,
                 split: dict | None = None):
        self.codec = load_codec(codec, device=device, n_codebooks=n_codebooks) if isinstance(codec, str) else codec
        self.run_id = run_id
        self.split = SplitConfig(**(split or {}))

    def __call__(self, items: list[Item]) -> list[Item]:
        ok = [i for i in items if i.status == "ok"]
        for item, codes in zip(ok, self._encode(ok)):
            if isinstance(codes, str):  # the codec failed on this one alone
                item.quarantine("encode", codes)
                continue
            row = item.row
            row.update(duration_s=len(item.audio) / self.codec.sample_rate, n_frames=len(codes),
                       codes=np.asarray(codes, np.uint16), run_id=self.run_id,
                       split=assign_split(row["speaker"], row["utt_id"], self.split))
            item.audio = None  # the samples are not written; do not ship them to the writer
        return items

    def _encode(self, items: list[Item]) -> list:
        """Codes per item; if the batch fails, retry one by one and return the error text for failures."""
        if not items:
            return []
        try:
            return self.codec.encode([i.audio for i in items])
        except Exception:  # noqa: BLE001 - isolate the utterance that breaks the codec
            out = []
            for i in items:
                try:
                    out.append(self.codec.encode([i.audio])[0])
                except Exception as exc:  # noqa: BLE001
                    out.append(f"{i.file}: codec failed ({type(exc).__name__}: {exc})")
            return out


@dataclass
class TokenSink:
    """Token rows -> `shards/` tables (`tokenization.schema.token_schema`)."""

    n_codebooks: int = N_CODEBOOKS
    tables: tuple[str, ...] = (SHARDS,)

    def route(self, row: dict) -> str:
        return SHARDS

    def seconds(self, row: dict) -> float:
        return float(row["duration_s"])

    def reject_code(self, row: dict) -> str | None:
        return None

    def table(self, rows: list[dict], sub: str = SHARDS) -> pa.Table:
        return token_table(rows, self.n_codebooks)


def token_table(rows: list[dict], n_codebooks: int = N_CODEBOOKS) -> pa.Table:
    """Row dicts (codes as [T, K] arrays) -> a table of `token_schema` (missing columns null)."""
    schema = token_schema(n_codebooks)
    arrays = [codes_to_arrow([r["codes"] for r in rows], n_codebooks) if f.name == "codes"
              else pa.array([r.get(f.name) for r in rows], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def tokenize_job(opts: ReaderOptions, codec: str | SpeechCodec, run_id: str, *, target_rate: int, max_seconds: float | None,
                 split: SplitConfig = SplitConfig(), rows_per_shard: int = 50_000, batch_size: int = 16,
                 device: str = "cpu", n_codebooks: int = N_CODEBOOKS, encoders: int = 1, encoder_cpus: float = 1.0,
                 encoder_gpus: float = 0.0) -> JobSpec:
    """The tokenize job for the engine: read -> load -> encode -> `shards/`."""
    encode = Step("encode", partial(EncodeStep, codec, run_id, device, n_codebooks, split.to_dict()),
                  cpus=encoder_cpus, gpus=encoder_gpus, actors=encoders)
    return JobSpec("tokenize", partial(read_unit, opts=opts), utterance_id,
                   partial(load_utterance, target_rate=target_rate, max_seconds=max_seconds),
                   TokenSink(n_codebooks), [encode], rows_per_shard, batch_size)


def tokenize_local(source: str, out: str, codec: SpeechCodec, *, fmt: str = "auto", rows_per_shard: int = 64,
                   batch_size: int = 8, max_seconds: float | None = 60.0) -> str:
    """The tokenize job's steps in this process, no Ray, in the order `pipelines.tokenize` runs them (plan the
    folder, run the units, write `_manifest.json`): token folders for tests and benchmarks. Returns `out`.

    Its run config names only the codec, so its run id is not a `pipelines.tokenize` run's.
    """
    from tokenization.engine.local_run import run_local
    from tokenization.engine.output_folder import compute_run_id, prepare_output, sync_output
    from tokenization.engine.writer import write_manifest
    from tokenization.readers.registry import list_units
    from tokenization.schema import file_metadata

    opts, config = ReaderOptions(), {"codec": codec.info.__dict__}
    units, run_id = list_units(source, fmt, opts), compute_run_id(config)
    prepare_output(out, run_id, config)
    sync_output(out, units)
    job = tokenize_job(opts, codec, run_id, target_rate=codec.sample_rate, max_seconds=max_seconds,
                       rows_per_shard=rows_per_shard, batch_size=batch_size)
    run_local(job, units, out, file_metadata(codec.info, {"run_id": run_id}))
    write_manifest(out, run_id, units, (SHARDS,))
    return out
