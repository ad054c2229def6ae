"""The tokenization job's processing steps: plain callables on Arrow tables, no Ray imports.

`pipelines/tokenize.py` wires them into Ray Data: `load_batch` as tasks, `EncodeBatch` as an
actor pool (codec loaded once per actor), `ShardAssembler` as the single writer. Unit tests
call them directly on hand-built tables.

Row flow (one input row = one planned encode batch, so codes never depend on scheduling):
    {shard, batch, entries(json)} --load_batch--> {.., pcm(bytes), status per entry}
    --EncodeBatch--> one row per utterance (token columns + shard, pos, stage, reason, file)
    --ShardAssembler--> shard files; one summary row per call
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenization.audio import BadAudio, read_validated, resample
from tokenization.codec import SpeechCodec, load_codec
from tokenization.schema import QUARANTINE_SCHEMA, codes_to_arrow, sha1_hex, token_schema
from tokenization.shards import ShardPlan, write_shard
from tokenization.splits import SplitConfig, assign_split

# Extra columns that travel with each utterance between steps.
ROUTING = [("shard", pa.int32()), ("pos", pa.int32()), ("stage", pa.string()), ("reason", pa.string()), ("file", pa.string())]


def plan_to_items(plans: list[ShardPlan]) -> list[dict]:
    """One item per encode batch: the unit of work of the load and encode steps."""
    items, pos = [], 0
    for plan in plans:
        pos = 0
        for b, batch in enumerate(plan.batches):
            items.append({"shard": plan.index, "batch": b, "first_pos": pos, "entries": json.dumps([e.to_dict() for e in batch])})
            pos += len(batch)
    return items


def load_batch(item: dict, target_rate: int, max_seconds: float | None) -> dict:
    """Read, validate and resample every file of one encode batch.

    Bad files do not raise: their entry gets `status=quarantine` and a reason naming the file.
    The good waveforms travel as one float32 byte string (`pcm`) with their lengths.
    """
    entries = json.loads(item["entries"])
    waves: list[np.ndarray] = []
    for e in entries:
        try:
            samples, rate = read_validated(e["audio_path"], max_seconds)
        except BadAudio as exc:
            e.update(status="quarantine", reason=str(exc))
            continue
        wave = resample(samples, rate, target_rate)
        e.update(status="ok", n_samples=len(wave), audio_sha1=sha1_hex(samples.astype(np.float32).tobytes()))
        waves.append(wave)
    pcm = np.concatenate(waves).astype(np.float32).tobytes() if waves else b""
    return {**item, "entries": json.dumps(entries), "pcm": pcm}


class EncodeBatch:
    """Actor step: the codec is loaded once, then each call encodes one planned batch.

    Each row's `split` comes from its speaker (or utt_id) hash under `split` (a SplitConfig dict).
    """

    split = SplitConfig()

    def __init__(self, codec_spec: str, run_id: str, device: str = "cpu", n_codebooks: int = 8, split: dict | None = None):
        self.codec: SpeechCodec = load_codec(codec_spec, device=device, n_codebooks=n_codebooks)
        self.run_id = run_id
        self.split = SplitConfig(**(split or {}))

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = [self.encode_item(row) for row in batch.to_pylist()]
        return pa.concat_tables(tables)

    def encode_item(self, item: dict) -> pa.Table:
        entries = json.loads(item["entries"])
        pcm = np.frombuffer(item["pcm"], dtype=np.float32)
        ok = [e for e in entries if e["status"] == "ok"]
        bounds = np.cumsum([0] + [e["n_samples"] for e in ok])
        waves = [pcm[bounds[i] : bounds[i + 1]] for i in range(len(ok))]
        codes_by_id = dict(zip([e["utt_id"] for e in ok], self._encode(waves, ok)))
        rows = []
        for offset, e in enumerate(entries):
            codes = codes_by_id.get(e["utt_id"]) if e["status"] == "ok" else None
            if e["status"] == "ok" and isinstance(codes, str):  # encode failed for this one
                e.update(status="quarantine", reason=codes, stage="encode")
                codes = None
            good = e["status"] == "ok"
            rows.append(
                {
                    "utt_id": e["utt_id"], "source": e["source"], "speaker": e["speaker"], "language": e["language"],
                    "text": e["text"],
                    "duration_s": e["n_samples"] / self.codec.sample_rate if good else None,
                    "n_frames": len(codes) if good else None,
                    "codes": codes,
                    "audio_sha1": e.get("audio_sha1", ""), "run_id": self.run_id,
                    "split": assign_split(e["speaker"], e["utt_id"], self.split),
                    "shard": item["shard"], "pos": item["first_pos"] + offset,
                    "stage": "" if good else e.get("stage", "load"), "reason": "" if good else e["reason"],
                    "file": e["audio_path"],
                }
            )
        return utterance_table(rows, self.codec.n_codebooks)

    def _encode(self, waves: list[np.ndarray], entries: list[dict]) -> list:
        """Codes per wave; if the batch fails, retry one by one and return the error text for failures."""
        if not waves:
            return []
        try:
            return self.codec.encode(waves)
        except Exception:  # noqa: BLE001 - isolate the utterance that breaks the codec
            out = []
            for wave, e in zip(waves, entries):
                try:
                    out.append(self.codec.encode([wave])[0])
                except Exception as exc:  # noqa: BLE001
                    out.append(f"{e['audio_path']}: codec failed ({type(exc).__name__}: {exc})")
            return out


def utterance_table(rows: list[dict], n_codebooks: int = 8) -> pa.Table:
    schema = pa.schema(list(token_schema(n_codebooks)) + ROUTING)
    columns = {}
    for f in schema:
        values = [r.get(f.name) for r in rows]  # `meta` (schema 3) is absent from legacy entries: null
        if f.name == "codes":
            missing = np.array([c is None for c in values])
            filled = [np.zeros((0, n_codebooks), np.uint16) if c is None else c for c in values]
            columns[f.name] = codes_to_arrow(filled, n_codebooks, mask=missing)
        else:
            columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=schema)


class ShardAssembler:
    """Single writer: buffers utterances per shard and writes a shard once all its rows arrived.

    Streaming: shards are written while encoding goes on, so a killed job keeps what it
    finished. Rows are ordered by their input position, so the file does not depend on the
    order in which batches finished.
    """

    def __init__(self, output: str, expected_rows: dict[int, int], metadata: dict[bytes, bytes], n_codebooks: int = 8):
        self.output = output
        self.expected = expected_rows
        self.metadata = metadata
        self.n_codebooks = n_codebooks
        self.buffers: dict[int, list[pa.Table]] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        written = []
        for shard in sorted(set(batch.column("shard").to_pylist())):
            part = batch.filter(pc.equal(batch.column("shard"), shard))
            self.buffers.setdefault(shard, []).append(part)
            if sum(t.num_rows for t in self.buffers[shard]) == self.expected[shard]:
                written.append(self._write(shard, pa.concat_tables(self.buffers.pop(shard))))
        kept = pc.equal(batch.column("stage"), "")
        return pa.table(
            {
                "rows": [batch.num_rows],
                "kept": [pc.sum(kept.cast(pa.int32())).as_py() or 0],
                "audio_seconds": [pc.sum(batch.column("duration_s")).as_py() or 0.0],
                "shards_written": [json.dumps(written)],
            }
        )

    def _write(self, shard: int, rows: pa.Table) -> str:
        rows = rows.sort_by("pos")
        ok = pc.equal(rows.column("stage"), "")
        kept = rows.filter(ok).select(token_schema(self.n_codebooks).names).cast(token_schema(self.n_codebooks))
        bad = rows.filter(pc.invert(ok))
        quarantine = pa.table(
            {
                "utt_id": bad.column("utt_id"),
                "line": pa.array([""] * bad.num_rows, pa.string()),
                "file": bad.column("file"),
                "stage": bad.column("stage"),
                "reason": bad.column("reason"),
                "run_id": bad.column("run_id"),
            },
            schema=QUARANTINE_SCHEMA,
        )
        name = f"shard-{shard:05d}"
        write_shard(self.output, name, kept, quarantine, self.metadata)
        return name
