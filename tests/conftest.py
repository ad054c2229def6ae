"""Shared fixtures: the espeak-ng sample corpus (real speech, known text) and the tiny codec."""

from __future__ import annotations

import os

import pytest

# Tests never reach a model hub; ray/torch pick up these limits in every worker too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tts_sample(tmp_path_factory):
    """JSONL manifest of the bundled espeak-ng TTS sample (36 utterances, 4 speakers)."""
    from tokenization.sample_corpus import make_tts_sample

    return make_tts_sample(tmp_path_factory.mktemp("tts_sample"))


@pytest.fixture(scope="session")
def tiny_codec():
    from tokenization.codec import load_codec

    return load_codec("tiny")
