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

from tokenization import storage
from tokenization.readers import hf, lhotse, manifests, webdataset  # noqa: F401  (register on import)
from tokenization.errors import UserError

SUFFIX_FORMATS = ((".tar", "webdataset"), (".tar.gz", "webdataset"), (".tgz", "webdataset"),
                  (".jsonl.gz", "lhotse"), (".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                  (".tsv", "csv"), (".parquet", "parquet"))


def detect_format(uri: str) -> str:
    """The layout an `--input` most likely is; folders: LJSpeech (metadata.csv) or a LibriTTS tree.

    Parquet is taken as a manifest (`parquet`); HF datasets need `--format hf`.
    """
    lower = uri.lower().rstrip("/")
    for suffix, fmt in SUFFIX_FORMATS:
        if lower.endswith(suffix):
            return fmt
    if storage.exists(storage.join(uri, "metadata.csv")):
        return "ljspeech"
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        return "libritts"
    raise UserError(f"--input {uri}: cannot tell its format; pass --format (one of webdataset, hf, lhotse, jsonl, csv, parquet, ljspeech, libritts)")
