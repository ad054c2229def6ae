"""Split assignment: deterministic across processes, fractions honoured over many keys, no speaker
in two splits of a tokenize output (library steps, no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tokenization.splits import SPLITS, SplitConfig, assign_split, split_key

ROOT = Path(__file__).resolve().parents[2]


def test_same_split_in_a_fresh_process_unlike_python_hash():
    keys = [f"spk_{i}" for i in range(200)]
    cfg = SplitConfig(valid=0.2, test=0.2)
    here = [cfg.assign(k) for k in keys]
    code = ("import json,sys; from tokenization.splits import SplitConfig; "
            "c = SplitConfig(valid=0.2, test=0.2); print(json.dumps([c.assign(k) for k in json.loads(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(keys)], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize("valid,test", [(0.1, 0.1), (0.05, 0.3), (0.0, 0.0)])
def test_fractions_hold_over_many_keys(valid, test):
    cfg = SplitConfig(valid=valid, test=test)
    n = 20_000
    counts = Counter(cfg.assign(f"speaker-{i}") for i in range(n))
    assert set(counts) <= set(SPLITS)
    for name, want in (("valid", valid), ("test", test), ("train", 1 - valid - test)):
        assert abs(counts[name] / n - want) < 0.015, (name, counts)


def test_salt_reshuffles_and_fractions_are_checked():
    keys = [f"s{i}" for i in range(500)]
    a = [SplitConfig(0.3, 0.3).assign(k) for k in keys]
    b = [SplitConfig(0.3, 0.3, salt="other").assign(k) for k in keys]
    assert a != b
    with pytest.raises(ValueError, match="sum to <= 1"):
        SplitConfig(valid=0.6, test=0.5)


def test_empty_speaker_falls_back_to_the_row_id():
    cfg = SplitConfig(valid=0.3, test=0.3)
    assert split_key("", "utt1") != split_key("", "utt2")
    assert {assign_split("", f"utt{i}", cfg) for i in range(100)} == set(SPLITS)
    assert len({assign_split("spk", f"utt{i}", cfg) for i in range(100)}) == 1  # one speaker, one split


def test_tokenize_output_has_no_speaker_in_two_splits(tts_sample, tiny_codec, tmp_path):
    """18 of the sample's clips relabelled as 7 crafted speakers (2 clips each) and 4 speakerless clips."""
    from tokenization.engine.local_run import run_local
    from tokenization.schema import file_metadata, token_schema
    from tokenization.tokenize_job import tokenize_job
    from tokenization.readers.registry import list_units
    from tokenization.units import ReaderOptions

    recs = [json.loads(line) for line in tts_sample.read_text().splitlines()][:18]
    for i, r in enumerate(recs):
        r["audio_path"] = str(tts_sample.parent / r["audio_path"])
        r["speaker"] = f"crafted_{i % 7}" if i < 14 else ""
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    split = SplitConfig(valid=0.3, test=0.3)
    job = tokenize_job(ReaderOptions(), tiny_codec, "test", target_rate=tiny_codec.sample_rate, max_seconds=60.0, split=split,
                       rows_per_shard=8, batch_size=4)
    written = run_local(job, list_units(str(manifest), "jsonl", ReaderOptions()), str(tmp_path / "out"), file_metadata(tiny_codec.info))
    assert len(written) == 3

    table = pq.read_table(tmp_path / "out" / "shards")
    assert table.schema.names == token_schema().names and table.num_rows == 18
    by_speaker = defaultdict(set)
    for row in table.select(["utt_id", "speaker", "split"]).to_pylist():
        by_speaker[row["speaker"] or row["utt_id"]].add(row["split"])
        assert row["split"] == assign_split(row["speaker"], row["utt_id"], split)
    assert all(len(s) == 1 for s in by_speaker.values()), by_speaker
    assert set().union(*by_speaker.values()) == set(SPLITS)
