"""Corpus readers, one module per layout; importing this package registers them all.

| `--format`   | input                                   | unit                      |
| ------------ | --------------------------------------- | ------------------------- |
| `webdataset` | `.tar`/`.tar.gz`, folder or glob        | one tar                   |
| `hf`         | Parquet with an audio struct            | one row group             |
| `lhotse`     | cuts `.jsonl`/`.jsonl.gz`               | a byte range (gz: a file) |
| `jsonl`/`csv`| manifests of loose files (spans allowed)| a byte range              |
| `parquet`    | manifest Parquet (`audio_path` column)  | one row group             |
| `ljspeech`, `libritts` | folder layouts                | the folder / a chapter    |

Detection for `--format auto` lives here so the registry stays free of layout knowledge.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from tokenization import storage
from tokenization.paths import GLOB_CHARS, list_input_files
from tokenization.readers import hf, lhotse, manifests, webdataset  # noqa: F401  (register on import)
from tokenization.errors import UserError

SUFFIX_FORMATS = ((".tar", "webdataset"), (".tar.gz", "webdataset"), (".tgz", "webdataset"),
                  (".jsonl.gz", "lhotse"), (".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                  (".tsv", "csv"), (".parquet", "parquet"))


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
        raise UserError(f"--input {uri}: cannot tell its format; pass --format (one of webdataset, hf, lhotse, jsonl, "
                        "csv, parquet, ljspeech, libritts)")
    return "hf" if fmt == "parquet" and _is_hf(uri) else fmt
