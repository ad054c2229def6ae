"""The token-shard row, its Arrow schema, the quarantine table, the output layout and the file metadata.

Every reader and writer uses these: the folder names of a job's output (`SHARDS`, `KEPT`,
`REJECTS`, `QUARANTINE`), the codec facts in each Parquet file's key/value metadata
(`file_metadata` writes them, `decode_metadata`/`read_file_metadata` read them back).
The dialogue row and the scored TTS row live one floor up, in `tokenization/dialogue_schema.py`,
together with the detection of an output folder's kind.

`codes` is stored as `list<fixed_size_list<uint16, K>>` (time-major `[n_frames, K]`) rather
than a Ray tensor extension, so pyarrow, DuckDB, Polars and `datasets` all open the shards.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Callable, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tokenization.codec import CodecInfo

SCHEMA_VERSION = "4"  # 2: `split` column (tokenization.splits); 3: `meta` column (nullable JSON string); 4: `audio_fp`
N_CODEBOOKS = 8
PARQUET_COMPRESSION = "zstd"
CODEBOOK_SIZE = 2048  # Mimi's; with FRAME_RATE, what `ShardCodec` assumes for a file whose metadata names none
FRAME_RATE = 12.5  # Hz

# Output layout: a tokenize job writes OUT/shards/, a filter job OUT/kept/ and OUT/rejects/; both OUT/quarantine/.
SHARDS, KEPT, REJECTS, QUARANTINE = "shards", "kept", "rejects", "quarantine"
MANIFEST = "_manifest.json"  # what a finished run wrote: files, rows, counts (tokenization.engine.writer.write_manifest)


def codes_type(n_codebooks: int = N_CODEBOOKS) -> pa.DataType:
    return pa.list_(pa.list_(pa.uint16(), n_codebooks))


ArrowType = Union[pa.DataType, Callable[[int], pa.DataType]]  # a type, or one built from n_codebooks (codes, turns)


def column(arrow: ArrowType, default=MISSING, default_factory=MISSING):
    """A row dataclass field that is also a Parquet column of type `arrow`: the dataclass is the schema."""
    return field(default=default, default_factory=default_factory, metadata={"arrow": arrow})


def arrow_fields(row_cls, n_codebooks: int = N_CODEBOOKS) -> list[pa.Field]:
    """The Arrow fields of a row dataclass whose fields are all `column(...)`, in field order."""
    out = []
    for f in fields(row_cls):
        t = f.metadata["arrow"]
        out.append(pa.field(f.name, t if isinstance(t, pa.DataType) else t(n_codebooks)))
    return out


def arrow_schema(row_cls, n_codebooks: int = N_CODEBOOKS) -> pa.Schema:
    return pa.schema(arrow_fields(row_cls, n_codebooks))


@dataclass
class TokenRow:
    """One utterance of a token shard."""

    utt_id: str = column(pa.string())
    source: str = column(pa.string())
    speaker: str = column(pa.string())
    language: str = column(pa.string())
    text: str = column(pa.string())
    duration_s: float = column(pa.float32())
    n_frames: int = column(pa.int32())
    codes: np.ndarray = column(codes_type)  # [T, K] uint16
    audio_sha1: str = column(pa.string())
    run_id: str = column(pa.string())
    split: str = column(pa.string(), "train")  # train | valid | test, by speaker hash (tokenization.splits)
    # the source sample's other metadata as JSON (`meta_json`, e.g. Emilia `dnsmos`); null if none;
    # shards before schema 3 have no column: read as None
    meta: str | None = column(pa.string(), None)
    # the audio's landmark fingerprint (`tokenization.fingerprint`: sorted uint32 hashes) for `pipelines.dedup`;
    # shards before schema 4 have no column: dedup asks for a rerun
    audio_fp: np.ndarray | None = column(pa.list_(pa.uint32()), None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_utterance(cls, utt, codes: np.ndarray, duration_s: float, audio_sha1: str, run_id: str,
                       split: str = "train") -> "TokenRow":
        """The row of a `tokenization.units.Utterance` and its codes [T, K] (`meta` dict -> JSON)."""
        return cls(utt.utt_id, utt.source, utt.speaker, utt.language, utt.text, float(duration_s), int(len(codes)),
                   np.asarray(codes, np.uint16), audio_sha1, run_id, split, meta_json(utt.meta))

    @classmethod
    def from_dict(cls, d: dict) -> "TokenRow":
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["codes"] = codes_to_numpy(kw["codes"])
        return cls(**kw)


LINE_CAP = 2000  # characters of an input line a quarantine row keeps: enough to see what was wrong


@dataclass
class QuarantineRow:
    """An input row that could not be processed, with the file and the reason (`OUT/quarantine/`)."""

    utt_id: str = column(pa.string())  # empty when the manifest line could not be parsed
    line: str = column(pa.string())  # the manifest line (or record) as read, for rows without an id; LINE_CAP chars
    file: str = column(pa.string())  # the audio file or manifest the problem is in
    stage: str = column(pa.string())  # manifest | load | encode | ...
    reason: str = column(pa.string())
    run_id: str = column(pa.string(), "")

    def to_dict(self) -> dict:
        return asdict(self)


def token_schema(n_codebooks: int = N_CODEBOOKS) -> pa.Schema:
    return arrow_schema(TokenRow, n_codebooks)


QUARANTINE_SCHEMA = arrow_schema(QuarantineRow)


def codes_to_arrow(codes: list[np.ndarray], n_codebooks: int = N_CODEBOOKS, mask: np.ndarray | None = None) -> pa.Array:
    """B arrays [T_b, K] -> one Arrow array of list<fixed_size_list<uint16, K>> without Python loops per frame.

    `mask[b]` True makes row b null (e.g. a quarantined utterance that has no codes).
    """
    lengths = np.array([len(c) for c in codes], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([np.asarray(c, dtype=np.uint16).reshape(-1) for c in codes]) if codes else np.zeros(0, np.uint16)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.uint16()), n_codebooks)
    return pa.ListArray.from_arrays(pa.array(offsets), frames, mask=None if mask is None else pa.array(mask))


def codes_to_numpy(value) -> np.ndarray:
    """One `codes` cell (Arrow scalar, list of lists or array) -> [T, K] uint16."""
    if isinstance(value, pa.Scalar):
        value = value.values.flatten().to_numpy(zero_copy_only=False).reshape(len(value), -1) if len(value) else []
    arr = np.asarray(value.tolist() if hasattr(value, "tolist") and not isinstance(value, np.ndarray) else value)
    if arr.dtype == object:
        arr = np.stack([np.asarray(f) for f in arr]) if len(arr) else np.zeros((0, N_CODEBOOKS))
    return arr.astype(np.uint16).reshape(len(arr), -1)


def rows_to_table(rows: list[TokenRow], n_codebooks: int = N_CODEBOOKS, row_cls: type = TokenRow) -> pa.Table:
    """Token rows, or rows of a `TokenRow` subclass `row_cls` (the scored TTS row), -> a table of `row_cls`'s schema."""
    schema = arrow_schema(row_cls, n_codebooks)
    columns = {f.name: [getattr(r, f.name) for r in rows] for f in fields(row_cls) if f.name != "codes"}
    arrays = [
        codes_to_arrow([r.codes for r in rows], n_codebooks) if name == "codes" else pa.array(columns[name], schema.field(name).type)
        for name in schema.names
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def file_metadata(info: CodecInfo, extra: dict | None = None) -> dict[bytes, bytes]:
    """Codec facts carried in each Parquet file's key/value metadata."""
    meta = {
        "codec_name": info.name,
        "codec_version": info.version,
        "checkpoint_id": info.checkpoint_id,
        "sample_rate": str(info.sample_rate),
        "frame_rate": str(info.frame_rate),
        "n_codebooks": str(info.n_codebooks),
        "codebook_size": str(info.codebook_size),
        "schema_version": SCHEMA_VERSION,
        **(extra or {}),
    }
    return {k.encode(): str(v).encode() for k, v in meta.items()}


def decode_metadata(raw: dict[bytes, bytes] | None) -> dict[str, str]:
    """Parquet key/value metadata (`schema.metadata`) as str -> str, without pyarrow's own `ARROW:` keys."""
    return {k.decode(): v.decode() for k, v in (raw or {}).items() if not k.startswith(b"ARROW:")}


def read_file_metadata(path_or_file) -> dict[str, str]:
    """The file metadata (`file_metadata`) of one Parquet file, from its footer alone."""
    return decode_metadata(pq.read_metadata(path_or_file).metadata)


@dataclass(frozen=True)
class ShardCodec:
    """The codec geometry one shard file's metadata names (`file_metadata`); defaults where it names none.

        >>> ShardCodec.of(read_file_metadata(path)).frame_rate
        12.5
    """

    n_codebooks: int = N_CODEBOOKS
    codebook_size: int = CODEBOOK_SIZE
    frame_rate: float = FRAME_RATE

    @classmethod
    def of(cls, meta: dict[str, str]) -> "ShardCodec":
        return cls(int(meta.get("n_codebooks", N_CODEBOOKS)), int(meta.get("codebook_size", CODEBOOK_SIZE)),
                   float(meta.get("frame_rate", FRAME_RATE)))


def table_to_parquet_bytes(table: pa.Table, metadata: dict[bytes, bytes] | None = None) -> bytes:
    """Deterministic Parquet bytes (same table -> same bytes), zstd, with file metadata."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=PARQUET_COMPRESSION, write_statistics=True)
    return buf.getvalue()


def meta_json(meta: dict | None) -> str | None:
    """The `meta` cell of a metadata dict: stable JSON (sorted keys), None when there is nothing to keep."""
    return stable_json(meta) if meta else None


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def stable_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
