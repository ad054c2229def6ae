"""TTS-mode filtering joins token shards with their source audio one input unit at a time."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

import filtering.steps as steps
from tokenization.schema import TokenRow, rows_to_table
from tokenization.sharded_job import shard_name
from tokenization.units import ReaderOptions, Unit, list_units


def _corpus(tmp_path):
    """Two manifest files (two units) of two clips each, and the listing the tokenize job made."""
    for m in range(2):
        lines = []
        for i in range(2):
            wav = tmp_path / f"m{m}_{i}.wav"
            sf.write(wav, np.zeros(1600, np.float32), 16000)
            lines.append(json.dumps({"id": f"m{m}_{i}", "audio_path": wav.name, "text": "a b", "speaker": "s"}))
        (tmp_path / f"part{m}.jsonl").write_text("\n".join(lines) + "\n")
    units = tuple(list_units(str(tmp_path), "auto", ReaderOptions()))
    assert [u.uri.rsplit("/", 1)[-1] for u in units] == ["part0.jsonl", "part1.jsonl"]
    return units


def _shard(folder, name, ids):
    rows = [TokenRow(i, "src", "s", "en", "a b", 0.1, 2, np.zeros((2, 8), np.uint16), "", "r") for i in ids]
    path = folder / f"{name}.parquet"
    pq.write_table(rows_to_table(rows), path)
    return Unit(uri=str(path), fmt="token-shards")


def test_a_shard_reads_only_the_unit_it_was_tokenized_from(tmp_path, monkeypatch):
    units = _corpus(tmp_path)
    read = []
    real = steps.read_unit
    monkeypatch.setattr(steps, "read_unit", lambda unit, opts: (read.append(unit.uri), real(unit, opts))[1])
    steps._AUDIO_INDEX.clear()
    shard = _shard(tmp_path, shard_name(units[1].key, 0), ["m1_0", "m1_1"])
    rows = list(steps.read_token_rows(shard, units))
    assert [r["_audio"].path.rsplit("/", 1)[-1] for r in rows] == ["m1_0.wav", "m1_1.wav"]
    assert read == [units[1].uri] and not steps._AUDIO_INDEX  # one unit read, no corpus-wide index built

    # Units listed differently from the tokenize run (unit 0's shard holds unit 1's rows): the whole index.
    read.clear()
    rows = list(steps.read_token_rows(_shard(tmp_path, shard_name(units[0].key, 0), ["m1_1"]), units))
    assert rows[0]["_audio"].path.endswith("m1_1.wav") and read == [units[0].uri, units[0].uri, units[1].uri]
