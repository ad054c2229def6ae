"""Input listings: JSONL/CSV/Parquet manifests, LJSpeech folders and LibriTTS-style trees.

`record_to_utterance` turns one manifest record into an `Utterance` (with a span when the
record has `start` + `end` or `offset` + `duration`, in seconds) or a `QuarantineRow`; the
range readers (`tokenization/readers/manifests.py`) call it inside tasks. `read_inputs` is
the whole-file listing used before units existed: the same `Utterance` records in a stable order,
and every line that cannot become one (malformed, non-UTF-8, no text, no audio path, a path
escaping the manifest's folder, duplicate id) a `QuarantineRow` naming the manifest line and
the reason. Nothing is dropped: the caller counts both lists.
"""

from __future__ import annotations

import csv
import os
import hashlib
import json
import pyarrow.parquet as pq

from tokenization import storage
from tokenization.paths import OutsidePath, resolve_audio_path
from tokenization.schema import QuarantineRow
from tokenization.units import AudioRef, Utterance

FORMATS = ("auto", "jsonl", "csv", "parquet", "ljspeech", "libritts")


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


AUDIO_KEYS = ("audio_path", "audio", "path")
COLUMN_KEYS = {*AUDIO_KEYS, "id", "utt_id", "text", "speaker", "source", "language", "start", "end", "offset", "duration"}


class BadRecord(ValueError):
    """A manifest record that cannot become an utterance; the message is the quarantine reason."""


def _seconds(record: dict, key: str) -> float:
    try:
        value = float(record[key])
    except (TypeError, ValueError):
        raise BadRecord(f"`{key}` is not a number of seconds ({record[key]!r})") from None
    if not value >= 0 or value == float("inf"):
        raise BadRecord(f"`{key}` must be a finite number of seconds >= 0 ({record[key]!r})")
    return value


def span_of(record: dict) -> tuple[float, float | None]:
    """(start_s, duration_s or None) from `start` [+ `end`] or `offset` + `duration`; (0, None): the whole file."""
    if record.get("start") not in (None, ""):
        start = _seconds(record, "start")
        if record.get("end") in (None, ""):
            return start, None
        end = _seconds(record, "end")
        if end <= start:
            raise BadRecord(f"empty span: end {end:g} s <= start {start:g} s")
        return start, end - start
    if record.get("offset") not in (None, ""):
        start = _seconds(record, "offset")
        if record.get("duration") in (None, ""):
            return start, None
        duration = _seconds(record, "duration")
        if duration <= 0:
            raise BadRecord("empty span: duration 0")
        return start, duration
    return 0.0, None


def record_to_utterance(record: dict, where: str, base_dir: str, source_default: str, audio_root: str = "",
                        allow_outside: bool = False) -> Utterance:
    """One manifest record -> Utterance (audio path resolved, span applied).

    Raises:
        BadRecord: no audio path, no transcript, a bad span, or a path escaping the folder.
    """
    audio_path = str(next((record[k] for k in AUDIO_KEYS if record.get(k)), "")).strip()
    source = str(record.get("source") or source_default)
    utt_id = str(record.get("id") or record.get("utt_id") or "").strip()
    text = record.get("text")
    if not audio_path:
        raise BadRecord("no audio_path")
    start, duration = span_of(record)
    segment = "" if (start, duration) == (0.0, None) else f"{start:g}+{duration if duration is None else f'{duration:g}'}"
    utt_id = utt_id or stable_utt_id(source, audio_path, segment)
    if not isinstance(text, str) or not text.strip():
        raise BadRecord(f"empty or missing transcript for {audio_path}")
    try:
        path = resolve_audio_path(base_dir, audio_path, audio_root, allow_outside)
    except OutsidePath as exc:
        raise BadRecord(str(exc)) from None
    extra = {k: v for k, v in record.items() if k not in COLUMN_KEYS and v not in (None, "")}
    return Utterance(utt_id=utt_id, text=text.strip(), audio=AudioRef(path=path, start_s=start, duration_s=duration),
                     speaker=str(record.get("speaker") or ""), source=source, language=str(record.get("language") or "en"),
                     meta=extra or None, where=where)


def record_id(record) -> str:
    """The id a record names, for quarantine rows of records that failed before one was settled."""
    return str(record.get("id") or record.get("utt_id") or "").strip() if isinstance(record, dict) else ""


class _Builder:
    """Validates records into utterances; collects quarantine rows; rejects duplicate ids."""

    def __init__(self, manifest: str, base_dir: str, source_default: str, audio_root: str = "", allow_outside: bool = False):
        self.manifest = manifest
        self.base_dir = base_dir  # relative audio paths resolve against it
        self.source_default = source_default
        self.audio_root, self.allow_outside = audio_root, allow_outside
        self.entries: list[Utterance] = []
        self.quarantine: list[QuarantineRow] = []
        self.n_in = 0
        self._seen: set[str] = set()

    def bad(self, where: str, reason: str, utt_id: str = "", line: str = "") -> None:
        self.quarantine.append(QuarantineRow(utt_id=utt_id, line=line[:2000], file=self.manifest, stage="manifest", reason=f"{where}: {reason}"))

    def add(self, record: dict, where: str, line: str) -> None:
        try:
            u = record_to_utterance(record, where, self.base_dir, self.source_default, self.audio_root, self.allow_outside)
        except BadRecord as exc:
            return self.bad(where, str(exc), record_id(record), line)
        if u.utt_id in self._seen:
            return self.bad(where, f"duplicate id {u.utt_id!r} ({u.audio.path})", u.utt_id, line)
        self._seen.add(u.utt_id)
        self.entries.append(u)


def _read_lines(uri: str) -> list[bytes]:
    with storage.open_input(uri) as f:
        return f.read().splitlines()


def _text_lines(b: _Builder, uri: str, lines: list[bytes], first_no: int = 1):
    """(`file:line`, decoded line) for each non-blank line; counts it in and quarantines non-UTF-8 ones."""
    for no, raw in enumerate(lines, start=first_no):
        if not raw.strip():
            continue
        b.n_in += 1
        where = f"{uri}:{no}"
        try:
            yield where, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            b.bad(where, f"line is not UTF-8 ({exc.reason} at byte {exc.start})", line=raw.decode("utf-8", "replace"))


def _jsonl(b: _Builder, uri: str) -> None:
    for where, line in _text_lines(b, uri, _read_lines(uri)):
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
    for where, line in _text_lines(b, uri, lines[1:], first_no=2):
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
    for where, line in _text_lines(b, meta, _read_lines(meta)):
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


def read_inputs(uri: str, fmt: str = "auto", source: str = "", audio_root: str = "",
                allow_outside: bool = False) -> tuple[list[Utterance], list[QuarantineRow], int]:
    """List the input on one machine (the units of `tokenization.units` spread it over tasks).

    Args:
        uri: a manifest file or a corpus folder, local or `s3://`.
        fmt: one of FORMATS.
        source: dataset name for rows that do not carry one (default: the input's file/folder name).
        audio_root, allow_outside: relative paths resolve under `audio_root` (default: the manifest's
            folder) and may not leave it unless `allow_outside`.
    Returns:
        (utterances in input order, each with its `AudioRef` path (absolute or s3://) and span, quarantined lines,
        number of input rows).
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
    b = _Builder(uri, base_dir, default_source, audio_root, allow_outside)
    {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "ljspeech": _ljspeech, "libritts": _libritts}[fmt](b, uri)
    return b.entries, b.quarantine, b.n_in
