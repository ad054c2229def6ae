"""ASR-WER of generated speech: the paper's WER metric, through the filter job's own code.

The generated waveform is resampled to Whisper's 16 kHz, transcribed by a `SpeechScorer`
(in practice a `filtering.asr.AsrBackend`: the same backends and `--asr` specs as
`pipelines.filter`, which the entry point loads) and scored against the text the model meant
to say with the scorer's `score` (the filter's Whisper normalizer + jiwer). `training/`
imports nothing from `filtering/`: the scorer comes in as an argument. Nothing here is
specific to evaluation, so the tests score known espeak-ng speech through exactly this function.

    >>> hyp, s = speech_wer(load_asr("tiny.en"), wav, 24_000, "It will be sunny.", "en")
    >>> s.wer
    0.0
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from tokenization.audio import WHISPER_SAMPLE_RATE, resample


class SpeechScorer(Protocol):
    """What evaluation needs of an ASR (a `filtering.asr.AsrBackend` is one): a name, transcripts of 16 kHz clips, WER."""

    name: str

    def transcribe(self, audios: list[np.ndarray]) -> list[str]: ...

    def score(self, text: str, hyp: str, language: str = "en") -> Any:
        """A `filtering.wer.Score` of `hyp` against `text`: `wer`, `cer`, `n_ref_words`, `n_sub`, `n_del`, `n_ins`."""


def speech_wer(asr: SpeechScorer, waveform: np.ndarray, sr: int, text: str, language: str = "en") -> tuple[str, Any]:
    """Transcribe `waveform` and score it against `text`.

    Args:
        asr: a loaded ASR backend (`filtering.asr.load_asr`).
        waveform: mono float32 [S] at `sr` Hz (empty: the hypothesis is empty).
        text: what the speech should say (the generated reply text).
        language: picks the normalizer (`filtering.normalize`).
    Returns:
        (raw ASR hypothesis, score with WER/CER and edit counts on normalized text).
    """
    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
    hyp = asr.transcribe([resample(audio, sr, WHISPER_SAMPLE_RATE)])[0] if len(audio) else ""
    return hyp, asr.score(text, hyp, language)
