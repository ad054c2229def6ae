"""Manifests of loose audio files: JSONL/CSV (byte ranges), Parquet (row groups), LJSpeech, LibriTTS.

Each record goes through `record_to_utterance` (audio path resolved under the folder rule,
`start`+`end` / `offset`+`duration` spans, in seconds). The driver lists files and sizes only;
lines are parsed in tasks (so a CSV field may not hold a newline: ranges split at line ends).
LJSpeech is one whole-file unit (its `metadata.csv` is small); a LibriTTS tree is one unit per
chapter folder, whose transcripts are read in the task. Every record that cannot become an
utterance (malformed, non-UTF-8, no text, no audio path, a path escaping the manifest's
folder, duplicate id) is a `QuarantineRow` naming the manifest line and the reason.
"""

from __future__ import annotations

import csv
from typing import Iterator

import pyarrow.fs as pafs

from tokenization import storage
from tokenization.paths import OutsidePath, folder_of, list_input_files, resolve_audio_path
from tokenization.readers.base import BadRecord, bad, line_of, manifest_source, stable_utt_id
from tokenization.readers.hf import list_row_groups, read_row_group
from tokenization.readers.ranges import decoded_lines, first_line, json_lines, list_ranges
from tokenization.schema import QuarantineRow
from tokenization.units import AudioRef, ReaderOptions, Record, Unit, Utterance

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz")
CSV_SUFFIXES = (".csv", ".tsv")
AUDIO_KEYS = ("audio_path", "audio", "path")
COLUMN_KEYS = {*AUDIO_KEYS, "id", "utt_id", "text", "speaker", "source", "language", "start", "end", "offset", "duration"}


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


class _Records:
    """Records -> Utterances or quarantine rows; duplicate ids within the unit are quarantined."""

    def __init__(self, unit: Unit, opts: ReaderOptions, folder: str = ""):
        self.unit, self.opts = unit, opts
        self.folder, self.source = folder or folder_of(unit.uri), manifest_source(unit.uri, opts)
        self.seen: set[str] = set()

    def __call__(self, record, where: str, line: str) -> Record:
        if not isinstance(record, dict):
            return bad(self.unit.uri, where, "malformed JSON line (not a JSON object)", line=line)
        try:
            u = record_to_utterance(record, where, self.folder, self.source, self.opts.audio_root, self.opts.allow_outside_paths)
        except BadRecord as exc:
            return bad(self.unit.uri, where, str(exc), record_id(record), line)
        if u.utt_id in self.seen:
            return bad(self.unit.uri, where, f"duplicate id {u.utt_id!r} ({u.audio.path})", u.utt_id, line)
        self.seen.add(u.utt_id)
        return u


def list_jsonl(uri: str, opts: ReaderOptions) -> list[Unit]:
    return list_ranges(uri, "jsonl", opts, JSONL_SUFFIXES)


def list_csv(uri: str, opts: ReaderOptions) -> list[Unit]:
    return list_ranges(uri, "csv", opts, CSV_SUFFIXES)


def read_jsonl(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    records = _Records(unit, opts)
    for where, line, record in json_lines(unit):
        yield record if isinstance(record, QuarantineRow) else records(record, where, line)


def read_csv(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    delimiter = "\t" if unit.uri.lower().endswith(".tsv") else ","
    header = next(csv.reader([first_line(unit.uri).decode("utf-8", "replace")], delimiter=delimiter), [])
    records = _Records(unit, opts)
    lines = decoded_lines(unit)
    if unit.start == 0:
        next(lines, None)  # the header belongs to the first range
    for where, line, why in lines:
        if line is None:
            yield bad(unit.uri, where, why)
            continue
        values = next(csv.reader([line], delimiter=delimiter))
        if len(values) != len(header):
            yield bad(unit.uri, where, f"malformed CSV line ({len(values)} fields, header has {len(header)})", line=line)
            continue
        yield records(dict(zip(header, values)), where, line)


def list_parquet(uri: str, opts: ReaderOptions) -> list[Unit]:
    return list_row_groups(uri, opts, fmt="parquet")


def read_parquet(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    rows, first = read_row_group(unit)
    records = _Records(unit, opts)
    for i, row in enumerate(rows):
        yield records(row, f"{unit.uri}#row{first + i}", line_of(row))


# --- folder layouts -------------------------------------------------------------------------------


def list_folder(fmt: str):
    def lister(uri: str, opts: ReaderOptions) -> list[Unit]:
        fs, path = storage.filesystem(uri)
        info = fs.get_file_info(path)
        return [Unit(uri=uri.rstrip("/"), fmt=fmt, size=info.size or 0, version=str(info.mtime_ns or ""))]

    return lister


def read_ljspeech(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    """Task side: `metadata.csv` lines `id|text|normalized text`, audio `wavs/<id>.wav` under the folder."""
    meta = storage.join(unit.uri, "metadata.csv")
    records = _Records(unit, opts, folder=folder_of(meta))  # the LJSpeech folder, absolute
    for where, line, why in decoded_lines(Unit(uri=meta, fmt=unit.fmt)):
        if line is None:
            yield bad(unit.uri, where, why)
            continue
        parts = line.split("|")
        if len(parts) < 2:
            yield bad(unit.uri, where, "malformed LJSpeech line (expected id|text|normalized text)", line=line)
            continue
        text = parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]
        yield records({"id": parts[0], "audio_path": f"wavs/{parts[0]}.wav", "text": text, "speaker": "",
                       "source": records.source}, where, line)


def list_libritts(uri: str, opts: ReaderOptions) -> list[Unit]:
    """Driver side: one unit per folder holding `.wav` files (a chapter); a listing, no transcript opened."""
    files = list_input_files(uri, (".wav",))
    chapters: dict[str, list] = {}
    for f in files:
        chapters.setdefault(f.uri.rsplit("/", 1)[0], []).append(f)
    return [Unit(uri=folder, fmt="libritts", size=sum(f.size for f in fs), version=max(f.version for f in fs))
            for folder, fs in sorted(chapters.items())]


def read_libritts(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    """Task side: `<speaker>/<chapter>/<utt>.wav` + `<utt>.normalized.txt` of one chapter folder."""
    fs, folder = storage.filesystem(unit.uri)
    prefix = "s3://" if unit.uri.startswith("s3://") else ""
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=False))
    speaker = unit.uri.rstrip("/").split("/")[-2] if unit.uri.count("/") >= 2 else ""
    source = opts.source or "libritts"
    seen: set[str] = set()
    for wav in sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".wav")):
        utt_id = wav.rsplit("/", 1)[-1][: -len(".wav")]
        txt = wav[: -len(".wav")] + ".normalized.txt"
        try:
            with fs.open_input_file(txt) as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            yield bad(prefix + wav, prefix + wav, f"no transcript {txt.rsplit('/', 1)[-1]} beside the audio", utt_id)
            continue
        except UnicodeDecodeError:
            yield bad(prefix + txt, prefix + txt, "transcript is not UTF-8", utt_id)
            continue
        if not text.strip():
            yield bad(prefix + txt, prefix + txt, "empty transcript", utt_id)
            continue
        if utt_id in seen:
            yield bad(prefix + wav, prefix + wav, f"duplicate id {utt_id!r}", utt_id)
            continue
        seen.add(utt_id)
        yield Utterance(utt_id, text.strip(), AudioRef(path=prefix + wav), speaker, source, "en", where=prefix + wav)
