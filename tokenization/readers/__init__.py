"""Corpus readers, one module per layout; `registry.READERS` is the one table that names them.

| `--format`   | input                                   | unit                      |
| ------------ | --------------------------------------- | ------------------------- |
| `webdataset` | `.tar`/`.tar.gz`, folder or glob        | one tar                   |
| `hf`         | Parquet with an audio struct            | one row group             |
| `lhotse`     | cuts `.jsonl`/`.jsonl.gz`               | a byte range (gz: a file) |
| `jsonl`/`csv`| manifests of loose files (spans allowed)| a byte range              |
| `parquet`    | manifest Parquet (`audio_path` column)  | one row group             |
| `ljspeech`, `libritts` | folder layouts                | the folder / a chapter    |
| `dialogue`   | dialogue manifests (four layouts)       | a byte range / file / row group |

This package module imports nothing, so importing one reader never imports the others; the
table, `detect_format` (`--format auto`) and the dispatching `list_units`/`read_unit` live in
`tokenization/readers/registry.py`.
"""
