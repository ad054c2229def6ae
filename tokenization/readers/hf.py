"""`--format hf`: Hugging Face Parquet with embedded audio (LibriTTS-R, MLS, GigaSpeech, Common Voice).

One unit per row group; the driver reads footers only. The audio column (`--audio-column`,
default `audio`) is a struct `{bytes, path}` (bytes decode in the load step; a path without
bytes resolves against the file's folder under the traversal rule) or `{array, sampling_rate}`
(taken as is); a plain string column is a path. Text, speaker and id columns are the
`--*-column` options or the first present of the names below; without an id column the id is
a stable hash of the file name and the row number. Every other column goes to `meta`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from tokenization import storage
from tokenization.errors import UserError
from tokenization.paths import InputFile, OutsidePath, folder_of, list_input_files, resolve_audio_path
from tokenization.readers.base import bad, line_of, meta_of, source_name, stable_utt_id
from tokenization.units import AudioRef, ReaderOptions, Record, Unit, Utterance

TEXT_COLUMNS = ("text", "text_normalized", "transcript", "sentence", "normalized_text")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")
ID_COLUMNS = ("id", "utt_id", "segment_id", "key")
LANGUAGE_COLUMNS = ("language", "locale", "lang")


def pick_column(names: list[str], option: str, candidates: tuple[str, ...], what: str, file: str) -> str:
    """The column named by an option (must exist), else the first candidate present, else ""."""
    if option:
        if option not in names:
            raise UserError(f"--{what}-column {option}: no such column in {file} (columns: {', '.join(names)})")
        return option
    return next((c for c in candidates if c in names), "")


def list_row_groups(uri: str, opts: ReaderOptions, fmt: str = "hf") -> list[Unit]:
    """Driver side: one unit per row group of every Parquet file (footers only)."""
    return [u for f in list_input_files(uri, (".parquet",)) for u in row_groups_of(f, opts, fmt)]


def row_groups_of(f: InputFile, opts: ReaderOptions, fmt: str = "hf") -> list[Unit]:
    """The row-group units of one listed Parquet file; for `hf`, the column options are checked here."""
    with storage.open_input(f.uri) as fh:
        try:
            pf = pq.ParquetFile(fh)
        except Exception as exc:  # ArrowInvalid: not Parquet; name the file instead of a bare Arrow error
            raise UserError(f"--input {f.uri}: not a Parquet file ({exc})") from None
        md, names = pf.metadata, pf.schema_arrow.names
    if fmt == "hf":  # a wrong column name fails here, on the driver, not in every task
        pick_column(names, opts.audio_column or "audio", (), "audio", f.uri)
        for option, what in ((opts.text_column, "text"), (opts.speaker_column, "speaker"), (opts.id_column, "id")):
            pick_column(names, option, (), what, f.uri)
    return [Unit(uri=f.uri, fmt=fmt, part=rg, start=rg, stop=rg + 1, size=f.size, version=f.version)
            for rg in range(md.num_row_groups)]


def read_row_group(unit: Unit) -> tuple[list[dict], int]:
    """The rows of one unit's row group and the file-wide index of its first row."""
    with storage.open_input(unit.uri) as fh:
        pf = pq.ParquetFile(fh)
        first = sum(pf.metadata.row_group(i).num_rows for i in range(unit.part))
        return pf.read_row_group(unit.part).to_pylist(), first


def audio_ref(value, folder: str, opts: ReaderOptions) -> AudioRef:
    """An HF audio cell -> AudioRef. Raises ValueError (null / empty) or OutsidePath."""
    if isinstance(value, str) and value.strip():
        return AudioRef(path=resolve_audio_path(folder, value.strip(), opts.audio_root, opts.allow_outside_paths))
    if not isinstance(value, dict):
        raise ValueError("null audio")
    if value.get("bytes"):
        return AudioRef(data=bytes(value["bytes"]))
    if value.get("array") is not None:
        array = np.asarray(value["array"], np.float32).reshape(-1)
        if not array.size or not value.get("sampling_rate"):
            raise ValueError("audio array without samples or sampling_rate")
        return AudioRef(array=array, sample_rate=int(value["sampling_rate"]))
    if isinstance(value.get("path"), str) and value["path"].strip():
        return AudioRef(path=resolve_audio_path(folder, value["path"].strip(), opts.audio_root, opts.allow_outside_paths))
    raise ValueError("null audio (no bytes, array or path)")


def read_hf(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    """Task side: one row group -> Utterances in row order; bad rows -> quarantine rows."""
    rows, first = read_row_group(unit)
    names = list(rows[0]) if rows else []
    audio_col = opts.audio_column or "audio"
    if rows and audio_col not in names:
        raise UserError(f"--audio-column {audio_col}: no such column in {unit.uri} (columns: {', '.join(names)})")
    text_col = pick_column(names, opts.text_column, TEXT_COLUMNS, "text", unit.uri)
    speaker_col = pick_column(names, opts.speaker_column, SPEAKER_COLUMNS, "speaker", unit.uri)
    id_col = pick_column(names, opts.id_column, ID_COLUMNS, "id", unit.uri)
    lang_col = next((c for c in LANGUAGE_COLUMNS if c in names), "")
    used = {audio_col, text_col, speaker_col, id_col, lang_col} - {""}
    source, folder, file_name = source_name(unit.uri, opts), folder_of(unit.uri), unit.uri.rsplit("/", 1)[-1]
    seen: set[str] = set()
    for i, row in enumerate(rows):
        n = first + i
        where = f"{unit.uri}#row{n}"
        utt_id = str(row.get(id_col) if id_col and row.get(id_col) is not None else "").strip()
        utt_id = utt_id or stable_utt_id(source, file_name, f"row{n}")
        text = row.get(text_col) if text_col else None
        if not isinstance(text, str) or not text.strip():
            yield bad(unit.uri, where, f"empty or missing text (column {text_col or 'none of ' + '/'.join(TEXT_COLUMNS)})",
                      utt_id, line_of(row))
            continue
        try:
            audio = audio_ref(row.get(audio_col), folder, opts)
        except (ValueError, OutsidePath) as exc:
            yield bad(unit.uri, where, f"{audio_col}: {exc}", utt_id, line_of(row))
            continue
        if utt_id in seen:
            yield bad(unit.uri, where, f"duplicate id {utt_id!r}", utt_id, line_of(row))
            continue
        seen.add(utt_id)
        yield Utterance(utt_id=utt_id, text=text.strip(), audio=audio,
                        speaker=str(row.get(speaker_col) or "") if speaker_col else "", source=source,
                        language=str(row.get(lang_col) or "en") if lang_col else "en",
                        meta=meta_of(row, used), where=where)
