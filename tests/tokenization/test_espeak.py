"""The sample speech without the espeak-ng program: libespeak-ng from the espeakng-loader wheel.

What `make demo` / `make test` get on a machine without the Debian package: the same sentences
and voices through the library must be real, deterministic speech that Whisper tiny.en
transcribes, or the sample dialogues' expected keeps would not hold there.
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from filtering.sample_dialogues import DIALOGUES, VOICES
from tokenization.espeak import espeak_to_wav
from tokenization.sample_corpus import VOICES as TTS_VOICES

SAMPLE_VOICES = sorted(set(TTS_VOICES.values()) | set(VOICES.values()))


def sha1(path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_library_speech_is_deterministic_and_plausible(tmp_path):
    text, (voice, wpm) = "The library is next to the post office.", VOICES["asst_f"]
    a = espeak_to_wav(text, tmp_path / "a.wav", voice, wpm, backend="library")
    espeak_to_wav("Something else first.", tmp_path / "x.wav", "en-gb-scotland+f2", 175, backend="library")
    b = espeak_to_wav(text, tmp_path / "b.wav", voice, wpm, backend="library")
    assert sha1(a) == sha1(b)  # same bytes whatever was spoken before
    samples, rate = sf.read(a, dtype="float32")
    assert rate == 22050 and samples.ndim == 1
    seconds = len(samples) / rate
    assert 1.5 < seconds < 5.0, seconds  # 8 words at 140 words/min, plus pauses
    assert np.sqrt(np.mean(samples**2)) > 0.02  # speech, not silence
    if shutil.which("espeak-ng"):  # same voice and rate as the program, within the versions' difference
        p, _ = sf.read(espeak_to_wav(text, tmp_path / "p.wav", voice, wpm, backend="program"), dtype="float32")
        assert 0.7 < len(samples) / len(p) < 1.4


@pytest.mark.parametrize("voice,wpm", SAMPLE_VOICES, ids=[v for v, _ in SAMPLE_VOICES])
def test_every_sample_voice_speaks_through_the_library(voice, wpm, tmp_path):
    """Language codes (`en-gb`) resolve through the library's voice list as the program resolves them."""
    text = "Please call Stella and ask her to bring these things with her."
    samples, rate = sf.read(espeak_to_wav(text, tmp_path / "a.wav", voice, wpm, backend="library"), dtype="float32")
    assert 2.0 < len(samples) / rate < 6.0  # 12 words at 140-175 words/min
    assert np.sqrt(np.mean(samples**2)) > 0.02  # speech, not silence
    if shutil.which("espeak-ng"):
        p, _ = sf.read(espeak_to_wav(text, tmp_path / "p.wav", voice, wpm, backend="program"), dtype="float32")
        assert 0.7 < len(samples) / len(p) < 1.4


def test_language_code_and_its_voice_file_speak_alike(tmp_path):
    """`en-gb` is the voice file the list names for it (gmw/en), variant kept: same bytes, not a fallback voice."""
    text = "The library is next to the post office."
    by_code = espeak_to_wav(text, tmp_path / "a.wav", "en-gb+f2", 160, backend="library")
    by_file = espeak_to_wav(text, tmp_path / "b.wav", "gmw/en+f2", 160, backend="library")
    us = espeak_to_wav(text, tmp_path / "c.wav", "en-us+f2", 160, backend="library")
    assert sha1(by_code) == sha1(by_file) != sha1(us)


@pytest.fixture(scope="module")
def tiny_en():
    from filtering.asr import load_asr

    return load_asr("tiny.en")


@pytest.mark.parametrize("backend", ["library", pytest.param("program", marks=pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="the espeak-ng program is not installed"))])
def test_sample_answers_are_what_tiny_en_hears(backend, tiny_en, tmp_path):
    from tokenization.audio import WHISPER_SAMPLE_RATE as SAMPLE_RATE
    from filtering.wer import score
    from tokenization.audio import resample

    answers = sorted({(a, voice) for _, voice, pairs in DIALOGUES for _, a, spec in pairs if spec is None})
    audios = []
    for i, (text, voice) in enumerate(answers):
        samples, rate = sf.read(espeak_to_wav(text, tmp_path / f"{i}.wav", *VOICES[voice], backend=backend), dtype="float32")
        audios.append(resample(samples, rate, SAMPLE_RATE))
    hyps = tiny_en.transcribe(audios)
    wers = {text: score(text, hyp).wer for (text, _), hyp in zip(answers, hyps)}
    # the sample's matched answers are kept at max_wer 0.10: every one must, through either backend
    assert len(wers) >= 8 and max(wers.values()) <= 0.10, dict(zip([t for t, _ in answers], hyps))


def test_unknown_backend_and_voice_are_named(tmp_path):
    with pytest.raises(ValueError, match="VOCALNET_ESPEAK='nope'"):
        espeak_to_wav("hi", tmp_path / "a.wav", backend="nope")
    with pytest.raises(RuntimeError, match="no voice 'xx-nope'") as err:
        espeak_to_wav("hi", tmp_path / "a.wav", "xx-nope", backend="library")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)  # one line naming it
