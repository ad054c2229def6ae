"""Manifests of loose audio files: JSONL/CSV/Parquet manifests and the LJSpeech/LibriTTS folder layouts.

Whole-file units parsed by `tokenization.manifest` inside the task (byte-range units follow).
"""

from __future__ import annotations

from typing import Iterator

from tokenization import storage
from tokenization.units import AudioRef, Lister, Reader, ReaderOptions, Record, Unit, Utterance, register_reader


def _legacy_lister(fmt: str) -> Lister:
    def lister(uri: str, opts: ReaderOptions) -> list[Unit]:
        fs, path = storage.filesystem(uri)
        info = fs.get_file_info(path)
        return [Unit(uri=uri, fmt=fmt, size=info.size or 0, version=str(info.mtime_ns or ""))]

    return lister


def _legacy_reader(fmt: str) -> Reader:
    def reader(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
        from tokenization.manifest import read_inputs

        entries, bad, _ = read_inputs(unit.uri, fmt, opts.source)
        yield from bad
        for e in entries:
            yield Utterance(e.utt_id, e.text, AudioRef(path=e.audio_path), e.speaker, e.source, e.language, where=e.audio_path)

    return reader


for _fmt in ("jsonl", "csv", "parquet", "ljspeech", "libritts"):
    register_reader(_fmt, _legacy_lister(_fmt), _legacy_reader(_fmt))
