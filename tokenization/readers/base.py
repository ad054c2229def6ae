"""Small pieces every reader uses: quarantine rows, ids, default source names, JSON-safe metadata."""

from __future__ import annotations

import hashlib
import json
import math

from tokenization.schema import LINE_CAP, QuarantineRow
from tokenization.units import ReaderOptions

STAGE = "manifest"  # quarantine stage of everything a reader rejects (before any audio is decoded)


class BadRecord(ValueError):
    """An input record that cannot become an utterance or a dialogue; the message is the quarantine reason."""


def bad(file: str, where: str, reason: str, utt_id: str = "", line: str = "") -> QuarantineRow:
    """A quarantine row naming the file, the place in it (`where`) and the reason."""
    return QuarantineRow(utt_id=utt_id, line=line[:LINE_CAP], file=file, stage=STAGE, reason=f"{where}: {reason}")


def stable_utt_id(source: str, rel_path: str, segment: str = "") -> str:
    """Hash of source + relative path (+ segment): stable across machines and reruns."""
    return hashlib.sha1(f"{source}\x00{rel_path}\x00{segment}".encode()).hexdigest()[:20]


def source_name(uri: str, opts: ReaderOptions) -> str:
    """`--source`, else the input's folder name (`Emilia/EN/EN-B000000.tar` -> `EN`): one name per data set,
    not one per tar or row group."""
    if opts.source:
        return opts.source
    parts = uri.rstrip("/").split("/")
    return parts[-2] if len(parts) > 1 and parts[-2] else parts[-1].split(".")[0]


def manifest_source(uri: str, opts: ReaderOptions) -> str:
    """`--source`, else the manifest's (or folder's) name without extensions: a manifest names its data set."""
    return opts.source or uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]


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


def line_of(record) -> str:
    """A record as one JSON line for the quarantine table (binary values elided)."""
    return json.dumps(_json_safe(record), ensure_ascii=False, default=str)[:LINE_CAP]
