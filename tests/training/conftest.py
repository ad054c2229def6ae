"""Fixtures for model tests: the real BPE tokenizer (`tokenizer_path`, tests/conftest.py), tiny models, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenization.audio import WHISPER_SAMPLE_RATE as SAMPLE_RATE

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)


@pytest.fixture
def make_model(tokenizer_path):
    """Tiny VocalNet-M2 with a fixed seed; kwargs go to `TalkerConfig`."""
    from training.model import VocalNetConfig, VocalNetM2

    def make(n_mtp: int = 0, seed: int = 0, **talker):
        torch.manual_seed(seed)
        return VocalNetM2(VocalNetConfig.tiny(n_mtp=n_mtp, **talker), tokenizer_path)

    return make


@pytest.fixture(scope="session")
def tts_rows():
    rng = np.random.default_rng(0)
    return [
        {"text": "hello there my friend", "codes": rng.integers(0, 2048, (22, 8)).astype(np.uint16), "n_frames": 22},
        {"text": "good morning", "codes": rng.integers(0, 2048, (9, 8)).tolist(), "n_frames": 9},
    ]


@pytest.fixture(scope="session")
def dialogue_rows():
    rng = np.random.default_rng(1)
    return [
        {"user_audio": (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32), "assistant_text": "yes indeed",
         "assistant_codes": rng.integers(0, 2048, (12, 8)).astype(np.uint16)},
        {"user_audio": (0.1 * rng.standard_normal(40_000)).astype(np.float32), "assistant_text": "no, thanks",
         "assistant_codes": rng.integers(0, 2048, (7, 8)).astype(np.uint16)},
    ]
