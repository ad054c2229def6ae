"""Input listings: JSONL/CSV/Parquet manifests, LJSpeech folders and LibriTTS-style trees.

`read_inputs` turns any of them into `ManifestEntry` records in a stable order, and every
line that cannot become one (malformed, non-UTF-8, no text, no audio path, duplicate id)
into a `QuarantineRow` naming the manifest line and the reason. Nothing is dropped: the
caller counts both lists.
"""

from __future__ import annotations

import csv
import os
import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass

import pyarrow.parquet as pq

from tokenization import storage
from tokenization.schema import QuarantineRow

FORMATS = ("auto", "jsonl", "csv", "parquet", "ljspeech", "libritts")


@dataclass
class ManifestEntry:
    """One utterance to encode; `audio_path` is absolute (or a full `s3://` URI)."""

    utt_id: str
    audio_path: str
    text: str
    speaker: str = ""
    source: str = ""
    language: str = "en"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ManifestEntry":
        return cls(**d)


def stable_utt_id(source: str, rel_path: str, segment: str = "") -> str:
    """Hash of source + relative path (+ segment): stable across machines and reruns."""
    return hashlib.sha1(f"{source}\x00{rel_path}\x00{segment}".encode()).hexdigest()[:20]


def detect_format(uri: str) -> str:
    if storage.exists(storage.join(uri, "metadata.csv")):
        return "ljspeech"
    lower = uri.lower()
    for ext, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".tsv", "csv"), (".parquet", "parquet")):
        if lower.endswith(ext):
            return fmt
    fs, path = storage.filesystem(uri)
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type == pafs.FileType.Directory:
        return "libritts"
    raise ValueError(f"--input {uri}: cannot tell its format; pass --format jsonl|csv|parquet|ljspeech|libritts")


def _resolve(base_dir: str, audio_path: str) -> str:
    if "://" in audio_path or audio_path.startswith("/"):
        return audio_path
    if "://" in base_dir:
        return storage.join(base_dir, audio_path)
    return posixpath.normpath(posixpath.join(base_dir, audio_path))


class _Builder:
    """Validates records into entries; collects quarantine rows; rejects duplicate ids."""

    def __init__(self, manifest: str, base_dir: str, source_default: str):
        self.manifest = manifest
        self.base_dir = base_dir  # relative audio paths resolve against it
        self.source_default = source_default
        self.entries: list[ManifestEntry] = []
        self.quarantine: list[QuarantineRow] = []
        self.n_in = 0
        self._seen: set[str] = set()

    def bad(self, where: str, reason: str, utt_id: str = "", line: str = "") -> None:
        self.quarantine.append(QuarantineRow(utt_id=utt_id, line=line[:2000], file=self.manifest, stage="manifest", reason=f"{where}: {reason}"))

    def add(self, record: dict, where: str, line: str) -> None:
        audio_path = str(record.get("audio_path") or record.get("audio") or record.get("path") or "").strip()
        text = record.get("text")
        source = str(record.get("source") or self.source_default)
        utt_id = str(record.get("id") or record.get("utt_id") or "").strip()
        if not audio_path:
            return self.bad(where, "no audio_path", utt_id, line)
        if not utt_id:
            utt_id = stable_utt_id(source, audio_path)
        if not isinstance(text, str) or not text.strip():
            return self.bad(where, f"empty or missing transcript for {audio_path}", utt_id, line)
        if utt_id in self._seen:
            return self.bad(where, f"duplicate id {utt_id!r} ({audio_path})", utt_id, line)
        self._seen.add(utt_id)
        self.entries.append(
            ManifestEntry(
                utt_id=utt_id,
                audio_path=_resolve(self.base_dir, audio_path),
                text=text.strip(),
                speaker=str(record.get("speaker") or ""),
                source=source,
                language=str(record.get("language") or "en"),
            )
        )


def _read_lines(uri: str) -> list[bytes]:
    with storage.open_input(uri) as f:
        return f.read().splitlines()


def _jsonl(b: _Builder, uri: str) -> None:
    for no, raw in enumerate(_read_lines(uri), start=1):
        if not raw.strip():
            continue
        b.n_in += 1
        where = f"{uri}:{no}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            b.bad(where, f"line is not UTF-8 ({exc.reason} at byte {exc.start})", line=raw.decode("utf-8", "replace"))
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            b.bad(where, f"malformed JSON line ({exc})", line=line)
            continue
        b.add(record, where, line)


def _csv(b: _Builder, uri: str) -> None:
    lines = _read_lines(uri)
    if not lines:
        return
    delimiter = "\t" if uri.lower().endswith(".tsv") else ","
    header = next(csv.reader([lines[0].decode("utf-8", "replace")], delimiter=delimiter))
    for no, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        b.n_in += 1
        where = f"{uri}:{no}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            b.bad(where, f"line is not UTF-8 ({exc.reason} at byte {exc.start})", line=raw.decode("utf-8", "replace"))
            continue
        values = next(csv.reader([line], delimiter=delimiter))
        if len(values) != len(header):
            b.bad(where, f"malformed CSV line ({len(values)} fields, header has {len(header)})", line=line)
            continue
        b.add(dict(zip(header, values)), where, line)


def _parquet(b: _Builder, uri: str) -> None:
    fs, path = storage.filesystem(uri)
    pf = pq.ParquetFile(path, filesystem=fs)
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            row += 1
            b.n_in += 1
            b.add(record, f"{uri}#row{row}", json.dumps(record, default=str))


def _ljspeech(b: _Builder, folder: str) -> None:
    meta = storage.join(folder, "metadata.csv")
    b.source_default = b.source_default or "ljspeech"
    for no, raw in enumerate(_read_lines(meta), start=1):
        if not raw.strip():
            continue
        b.n_in += 1
        where = f"{meta}:{no}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            b.bad(where, f"line is not UTF-8 ({exc.reason} at byte {exc.start})", line=raw.decode("utf-8", "replace"))
            continue
        parts = line.split("|")
        if len(parts) < 2:
            b.bad(where, "malformed LJSpeech line (expected id|text|normalized text)", line=line)
            continue
        text = parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]
        b.add({"id": parts[0], "audio_path": f"wavs/{parts[0]}.wav", "text": text, "speaker": "", "source": b.source_default}, where, line)


def _libritts(b: _Builder, folder: str) -> None:
    """`<speaker>/<chapter>/<utt>.wav` with `<utt>.normalized.txt` beside it."""
    fs, root = storage.filesystem(folder)
    import pyarrow.fs as pafs

    b.source_default = b.source_default or "libritts"
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    wavs = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".wav"))
    prefix = "s3://" if folder.startswith("s3://") else ""
    for wav in wavs:
        b.n_in += 1
        rel = wav[len(root):].lstrip("/")
        txt = wav[: -len(".wav")] + ".normalized.txt"
        try:
            with fs.open_input_file(txt) as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            b.bad(prefix + wav, f"no transcript {txt.rsplit('/', 1)[-1]} beside the audio", line=rel)
            continue
        except UnicodeDecodeError:
            b.bad(prefix + txt, "transcript is not UTF-8", line=rel)
            continue
        speaker = rel.split("/", 1)[0] if "/" in rel else ""
        b.add({"id": rel.rsplit("/", 1)[-1][: -len(".wav")], "audio_path": rel, "text": text, "speaker": speaker}, prefix + wav, rel)


def read_inputs(uri: str, fmt: str = "auto", source: str = "") -> tuple[list[ManifestEntry], list[QuarantineRow], int]:
    """List the input.

    Args:
        uri: a manifest file or a corpus folder, local or `s3://`.
        fmt: one of FORMATS.
        source: dataset name for rows that do not carry one (default: the input's file/folder name).
    Returns:
        (entries in input order, quarantined lines, number of input rows).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if not storage.exists(uri):
        raise FileNotFoundError(f"--input {uri}: no such file or folder")
    fmt = detect_format(uri) if fmt == "auto" else fmt
    default_source = source or uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    folder_layout = fmt in ("ljspeech", "libritts")
    base_dir = uri.rstrip("/") if folder_layout else uri.rsplit("/", 1)[0] if "/" in uri else "."
    if "://" not in base_dir:
        base_dir = os.path.abspath(base_dir)
    b = _Builder(uri, base_dir, default_source)
    {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "ljspeech": _ljspeech, "libritts": _libritts}[fmt](b, uri)
    return b.entries, b.quarantine, b.n_in
