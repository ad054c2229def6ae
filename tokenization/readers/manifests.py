"""Manifests of loose audio files: JSONL/CSV (byte ranges), Parquet (row groups), LJSpeech, LibriTTS.

Each record goes through `tokenization.manifest.record_to_utterance` (audio path resolved under
the folder rule, `start`+`end` / `offset`+`duration` spans). The driver lists files and sizes
only; lines are parsed in tasks (so a CSV field may not hold a newline: ranges split at line
ends). LJSpeech is one whole-file unit (its `metadata.csv` is small); a LibriTTS tree is one
unit per chapter folder, whose transcripts are read in the task.
"""

from __future__ import annotations

import csv
import json
from typing import Iterator

import pyarrow.fs as pafs

from tokenization import storage
from tokenization.manifest import BadRecord, read_inputs, record_id, record_to_utterance
from tokenization.paths import folder_of, list_input_files
from tokenization.readers.base import bad, line_of
from tokenization.readers.hf import list_row_groups, read_row_group
from tokenization.readers.ranges import first_line, list_ranges, unit_lines
from tokenization.schema import QuarantineRow
from tokenization.units import AudioRef, ReaderOptions, Record, Unit, Utterance, register_reader

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz")
CSV_SUFFIXES = (".csv", ".tsv")


def manifest_source(uri: str, opts: ReaderOptions) -> str:
    """`--source`, else the manifest's file name without extensions (as before units existed)."""
    return opts.source or uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]


class _Records:
    """Records -> Utterances or quarantine rows; duplicate ids within the unit are quarantined."""

    def __init__(self, unit: Unit, opts: ReaderOptions):
        self.unit, self.opts = unit, opts
        self.folder, self.source = folder_of(unit.uri), manifest_source(unit.uri, opts)
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


def decoded_lines(unit: Unit) -> Iterator[tuple[str, str | None, str]]:
    """(locator, line or None when not UTF-8, reason) for each line of a ranged unit."""
    for where, raw in unit_lines(unit):
        try:
            yield where, raw.decode("utf-8"), ""
        except UnicodeDecodeError as exc:
            yield where, None, f"line is not UTF-8 ({exc.reason} at byte {exc.start})"


def json_lines(unit: Unit) -> Iterator[tuple[str, str, object]]:
    """(locator, line, parsed JSON or a QuarantineRow for a non-UTF-8 / malformed line) per line of a unit."""
    for where, line, why in decoded_lines(unit):
        if line is None:
            yield where, "", bad(unit.uri, where, why)
            continue
        try:
            yield where, line, json.loads(line)
        except ValueError as exc:
            yield where, line, bad(unit.uri, where, f"malformed JSON line ({exc})", line=line)


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
    entries, quarantined, _ = read_inputs(unit.uri, "ljspeech", opts.source, opts.audio_root, opts.allow_outside_paths)
    yield from quarantined
    yield from entries


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


register_reader("jsonl", lambda uri, opts: list_ranges(uri, "jsonl", opts, JSONL_SUFFIXES), read_jsonl)
register_reader("csv", lambda uri, opts: list_ranges(uri, "csv", opts, CSV_SUFFIXES), read_csv)
register_reader("parquet", list_parquet, read_parquet)
register_reader("ljspeech", list_folder("ljspeech"), read_ljspeech)
register_reader("libritts", list_libritts, read_libritts)
