"""ASR-WER of generated speech: the paper's WER metric, through the filter job's own code.

The generated waveform is resampled to Whisper's 16 kHz, transcribed by a
`filtering.asr.AsrBackend` (the same backends and `--asr` specs as `pipelines.filter`) and
scored against the text the model meant to say with `filtering.wer.score` (Whisper
normalizer + jiwer). Nothing here is specific to evaluation, so the tests score known
espeak-ng speech through exactly this function.

    >>> hyp, s = speech_wer(load_asr("tiny.en"), wav, 24_000, "It will be sunny.", "en")
    >>> s.wer
    0.0
"""

from __future__ import annotations

import numpy as np

from filtering.asr import SAMPLE_RATE, AsrBackend
from filtering.wer import Score, score
from tokenization.audio import resample


def speech_wer(asr: AsrBackend, waveform: np.ndarray, sr: int, text: str, language: str = "en") -> tuple[str, Score]:
    """Transcribe `waveform` and score it against `text`.

    Args:
        asr: a loaded ASR backend (`filtering.asr.load_asr`).
        waveform: mono float32 [S] at `sr` Hz (empty: the hypothesis is empty).
        text: what the speech should say (the generated reply text).
        language: picks the normalizer (`filtering.normalize`).
    Returns:
        (raw ASR hypothesis, Score with WER/CER and edit counts on normalized text).
    """
    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
    hyp = asr.transcribe([resample(audio, sr, SAMPLE_RATE)])[0] if len(audio) else ""
    return hyp, score(text, hyp, language)
