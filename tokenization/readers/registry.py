"""The one table of input layouts, and the functions that dispatch through it.

    units = list_units("s3://bucket/Emilia/EN/*.tar", "auto", opts)    # driver: units, never utterances
    for rec in read_unit(units[0], opts):                              # task: Utterance | QuarantineRow
        ...

`READERS` names every layout's lister (driver side) and reader (task side); nothing registers
itself on import. `formats()` are the utterance layouts `--format` offers; `dialogue` yields
`DialogueSpec`s for the dialogue filter. `read_input` reads a whole input on one machine (tests,
benchmarks); jobs spread units over tasks instead.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import pyarrow.fs as pafs

from tokenization import storage
from tokenization.errors import UserError
from tokenization.paths import GLOB_CHARS, input_root, list_input_files
from tokenization.readers import dialogue, hf, lhotse, manifests, webdataset
from tokenization.readers.base import bad
from tokenization.schema import QuarantineRow
from tokenization.units import Lister, Reader, ReaderOptions, Record, Unit, keyed


class Layout(NamedTuple):
    lister: Lister  # driver: (uri, opts) -> units, listings and footers only
    reader: Reader  # task: (unit, opts) -> records
    records: str = "utterance"  # what the reader yields: "utterance" (tokenize, TTS filter) or "dialogue"


READERS: dict[str, Layout] = {
    "webdataset": Layout(webdataset.list_tars, webdataset.read_tar),
    "hf": Layout(hf.list_row_groups, hf.read_hf),
    "lhotse": Layout(lhotse.list_cuts, lhotse.read_cuts),
    "jsonl": Layout(manifests.list_jsonl, manifests.read_jsonl),
    "csv": Layout(manifests.list_csv, manifests.read_csv),
    "parquet": Layout(manifests.list_parquet, manifests.read_parquet),
    "ljspeech": Layout(manifests.list_folder("ljspeech"), manifests.read_ljspeech),
    "libritts": Layout(manifests.list_libritts, manifests.read_libritts),
    "dialogue": Layout(dialogue.list_dialogue_units, dialogue.read_dialogue_unit, "dialogue"),
}

SUFFIX_FORMATS = ((".tar", "webdataset"), (".tar.gz", "webdataset"), (".tgz", "webdataset"),
                  (".jsonl.gz", "lhotse"), (".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                  (".tsv", "csv"), (".parquet", "parquet"))


def formats() -> tuple[str, ...]:
    """`--format` choices of the utterance jobs: `auto` and every layout that yields utterances."""
    return ("auto", *sorted(f for f, layout in READERS.items() if layout.records == "utterance"))


def _is_hf(uri: str) -> bool:
    """Does the first Parquet file of the input have an HF audio struct column (`audio` with bytes or array)?"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = list_input_files(uri, (".parquet",))[0]
    with storage.open_input(first.uri) as f:
        schema = pq.read_schema(f)
    if "audio" not in schema.names or not pa.types.is_struct(schema.field("audio").type):
        return False
    fields = {schema.field("audio").type.field(i).name for i in range(schema.field("audio").type.num_fields)}
    return bool(fields & {"bytes", "array"})


def detect_format(uri: str) -> str:
    """The layout an `--input` most likely is, from its name, a folder's top-level listing and, for
    Parquet, the first file's schema (an `audio` struct: `hf`; else a manifest). Folders: LJSpeech
    (metadata.csv), files by suffix, else a LibriTTS tree."""
    lower = uri.lower().rstrip("/")
    fmt = next((f for suffix, f in SUFFIX_FORMATS if lower.endswith(suffix)), None)
    if fmt is None and not any(c in uri for c in GLOB_CHARS):
        if storage.exists(storage.join(uri, "metadata.csv")):
            return "ljspeech"
        fs, path = storage.filesystem(uri)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            names = [i.path.lower() for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.File]
            fmt = next((f for suffix, f in SUFFIX_FORMATS if any(n.endswith(suffix) for n in names)), "libritts")
    if fmt is None:
        raise UserError(f"--input {uri}: cannot tell its format; pass --format (one of {', '.join(formats()[1:])})")
    return "hf" if fmt == "parquet" and _is_hf(uri) else fmt


def keyed_listing(uri: str, lister: Lister, opts: ReaderOptions) -> list[Unit]:
    """`lister`'s units of `uri`, indexed in listing order and keyed relative to the input root (shard names)."""
    return keyed(lister(uri, opts), input_root(uri))


def list_units(uri: str, fmt: str, opts: ReaderOptions) -> list[Unit]:
    """Driver side: the units of an input, indexed in listing order. Reads listings and footers only.

    `fmt` "auto" picks the layout from the input's name, a folder's listing or a Parquet schema (`detect_format`).
    """
    if fmt == "auto":
        fmt = detect_format(uri)
    if fmt not in READERS:
        raise UserError(f"--format {fmt}: expected one of {', '.join(formats())}")
    return keyed_listing(uri, READERS[fmt].lister, opts)


def read_unit(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    """Task side: every record (or quarantine row) of one unit, in a deterministic order."""
    return READERS[unit.fmt].reader(unit, opts)


def read_input(uri: str, fmt: str = "auto", opts: ReaderOptions | None = None) -> tuple[list, list[QuarantineRow]]:
    """Every unit of an input read in listing order on this machine (tests, benchmarks, small inputs).

    Returns:
        (records in input order, quarantine rows: what the readers rejected, and an id already seen in an
        earlier unit; within a unit the reader catches it).
    """
    opts = opts or ReaderOptions()
    records, quarantined, seen = [], [], set()
    for unit in list_units(uri, fmt, opts):
        for rec in read_unit(unit, opts):
            rid = "" if isinstance(rec, QuarantineRow) else getattr(rec, "dialogue_id", None) or rec.utt_id
            if isinstance(rec, QuarantineRow):
                quarantined.append(rec)
            elif rid in seen:
                quarantined.append(bad(unit.uri, unit.where, "duplicate id", rid))
            else:
                seen.add(rid)
                records.append(rec)
    return records, quarantined


def read_dialogues(manifest: str, source: str | None = None,
                   opts: ReaderOptions | None = None) -> tuple[list, list[QuarantineRow]]:
    """Every dialogue of a manifest (file, folder or glob; local or `s3://`): (`DialogueSpec`s in manifest
    order, quarantine rows for malformed records and duplicate ids)."""
    return read_input(manifest, "dialogue", opts or ReaderOptions(source=source or ""))
