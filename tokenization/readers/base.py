"""Small pieces every reader uses: quarantine rows, default source names, JSON-safe metadata."""

from __future__ import annotations

import json
import math

from tokenization.schema import QuarantineRow
from tokenization.units import ReaderOptions

STAGE = "manifest"  # quarantine stage of everything a reader rejects (before any audio is decoded)


def bad(file: str, where: str, reason: str, utt_id: str = "", line: str = "") -> QuarantineRow:
    """A quarantine row naming the file, the place in it (`where`) and the reason."""
    return QuarantineRow(utt_id=utt_id, line=line[:2000], file=file, stage=STAGE, reason=f"{where}: {reason}")


def source_name(uri: str, opts: ReaderOptions) -> str:
    """`--source`, else the input's folder name (`Emilia/EN/EN-B000000.tar` -> `EN`): one name per data set,
    not one per tar or row group."""
    if opts.source:
        return opts.source
    parts = uri.rstrip("/").split("/")
    return parts[-2] if len(parts) > 1 and parts[-2] else parts[-1].split(".")[0]


def _json_safe(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return None  # embedded binary (audio, features) does not belong in a metadata column
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)  # dates, decimals: kept readable


def meta_of(record: dict, used: set[str]) -> dict | None:
    """The keys of a sample that no column took, JSON-safe; None when there are none."""
    meta = {k: _json_safe(v) for k, v in record.items() if k not in used and not isinstance(v, (bytes, bytearray))}
    return meta or None


def line_of(record: dict) -> str:
    """A record as one JSON line for the quarantine table (binary values elided)."""
    return json.dumps(_json_safe(record), ensure_ascii=False, default=str)[:2000]
