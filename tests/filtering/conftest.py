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

    return load_asr("faster-whisper:tiny.en")


@pytest.fixture(scope="session")
def openai_asr(openai_checkpoint):
    from filtering.asr import load_asr

    return load_asr(f"openai-whisper:{openai_checkpoint}")


@pytest.fixture(scope="session")
def loaded_records(dialogue_sample):
    """The sample's dialogues loaded as filter items (no Ray): the job's read + load steps, one batch."""
    from tokenization.readers.registry import list_units
    from filtering.rules import Rules
    from filtering.filter_job import filter_job
    from tokenization.engine.jobs import read_batches
    from tokenization.units import ReaderOptions

    opts = ReaderOptions()
    job = filter_job("dialogue", opts, "test", asr="tiny.en", rules=Rules(), codec="tiny", max_seconds=None,
                     rows_per_shard=1000, batch_size=1000)
    items = [i for unit in list_units(str(dialogue_sample), "dialogue", opts) for b in read_batches(job, unit, None, set()) for i in b.items]
    assert all(i.status == "ok" or i.stage == "load" for i in items)
    return items


@pytest.fixture(scope="session")
def tokenize_out(tmp_path_factory, tts_sample, tiny_codec) -> tuple[Path, Path]:
    """A tokenize output folder built with the tokenization library steps (no Ray): 8 espeak utterances,
    one of them made unreadable (quarantined). Returns (folder, its input manifest)."""
    from tokenization.engine.local_run import run_local
    from tokenization.engine.output_folder import compute_run_id, prepare_output
    from tokenization.engine.writer import write_manifest
    from tokenization.readers.registry import list_units
    from tokenization.schema import SHARDS, file_metadata
    from tokenization.tokenize_job import tokenize_job
    from tokenization.units import ReaderOptions

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
    opts = ReaderOptions()
    units = list_units(str(manifest), "jsonl", opts)
    config = {"codec": tiny_codec.info.__dict__}
    run_id = compute_run_id(config)
    prepare_output(str(out), run_id, config)
    job = tokenize_job(opts, tiny_codec, run_id, target_rate=tiny_codec.sample_rate, max_seconds=60.0, rows_per_shard=4, batch_size=4)
    run_local(job, units, str(out), file_metadata(tiny_codec.info, {"run_id": run_id}))
    write_manifest(str(out), run_id, units, (SHARDS,), {"codec": tiny_codec.info.__dict__})
    return out, manifest
