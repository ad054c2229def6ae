"""Fixtures for the filter and audit tests: the espeak dialogue sample, real tiny.en in both
ASR backends (openai-whisper via a checkpoint converted once per session), filter and
tokenize output folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs import FILTER_ARGS, JOB_ENV, ROOT, run_module  # noqa: F401 (re-exported for the tests)

@pytest.fixture(scope="session")
def openai_checkpoint(tmp_path_factory) -> Path:
    """The shipped CTranslate2 tiny.en weights converted once into an openai-whisper checkpoint."""
    from filtering.asr import shipped_tiny_en
    from filtering.ct2_to_openai_whisper import convert

    return convert(shipped_tiny_en(), tmp_path_factory.mktemp("whisper") / "tiny_en.pt")


@pytest.fixture(scope="session")
def faster_asr():
    from filtering.asr import load_asr

    return load_asr("tiny.en")


@pytest.fixture(scope="session")
def openai_asr(openai_checkpoint):
    from filtering.asr import load_asr

    return load_asr(f"openai-whisper:{openai_checkpoint}")


@pytest.fixture(scope="session")
def loaded_records(dialogue_sample):
    """The sample's dialogues loaded as filter records (no Ray): one planned batch."""
    from filtering.dialogue_manifest import read_dialogues
    from filtering.steps import load_dialogue_batch, unpack

    specs, bad = read_dialogues(str(dialogue_sample))
    assert not bad
    item = {"shard": 0, "batch": 0, "first_pos": 0, "entries": json.dumps([s.to_dict() for s in specs])}
    return unpack(load_dialogue_batch(item, run_id="test")["payload"])




@pytest.fixture(scope="session")
def tokenize_out(tmp_path_factory, tts_sample, tiny_codec) -> tuple[Path, Path]:
    """A tokenize output folder built with the tokenization library steps (no Ray): 8 espeak utterances,
    one of them made unreadable (quarantined). Returns (folder, its input manifest)."""
    from tokenization.manifest import read_inputs
    from tokenization.schema import file_metadata
    from tokenization.shards import compute_run_id, plan_shards, prepare_output, write_manifest, write_quarantine
    from tokenization.steps import EncodeBatch, ShardAssembler, load_batch, plan_to_items
    import pyarrow as pa

    root = tmp_path_factory.mktemp("tts8")
    lines = tts_sample.read_text().splitlines()[:8]
    recs = [json.loads(line) for line in lines]
    for r in recs:
        r["audio_path"] = str(tts_sample.parent / r["audio_path"])
    (root / "broken.wav").write_bytes(b"RIFF not really")
    recs[3]["audio_path"] = str(root / "broken.wav")
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = root / "tokenized"
    entries, bad, n_in = read_inputs(str(manifest))
    config = {"codec": tiny_codec.info.__dict__}
    run_id = compute_run_id(config, entries)
    prepare_output(str(out), run_id, config)
    write_quarantine(str(out), "manifest", bad)
    plans = plan_shards(entries, 4, 4)
    enc = EncodeBatch.__new__(EncodeBatch)
    enc.codec, enc.run_id = tiny_codec, run_id
    writer = ShardAssembler(str(out), {p.index: p.n_rows for p in plans}, file_metadata(tiny_codec.info, {"run_id": run_id}))
    for item in plan_to_items(plans):
        loaded = load_batch(item, tiny_codec.sample_rate, 60.0)
        writer(enc(pa.Table.from_pylist([loaded])))
    write_manifest(str(out), run_id, n_in, len(bad), {"codec": tiny_codec.info.__dict__})
    return out, manifest
