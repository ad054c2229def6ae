"""Encoder work that follows speech length: short windows keep each clip's transcript, long clips go long-form.

Real Whisper tiny.en (both backends) on espeak speech; the 30 s-padded backend is the baseline.
"""

from __future__ import annotations

import numpy as np
import pytest

from filtering.asr import MIN_FRAMES, SAMPLE_RATE, WINDOW_FRAMES, WINDOW_S, fastest_backend, load_asr, window_frames
from filtering.sample_dialogues import DIALOGUES
from filtering.wer import score
from tokenization.audio import load_audio

# Matched assistant answers of the dialogue sample: different sentences, two voices, 2-3 s each.
ANSWERS = {f"{did}_a0": pairs[0][1] for did, _, pairs in DIALOGUES if did.startswith("d") and pairs[0][2] is None}


@pytest.fixture(scope="module")
def clips(dialogue_sample) -> tuple[list[np.ndarray], list[str]]:
    wavs = dialogue_sample.parent / "wavs"
    names = sorted(ANSWERS, key=lambda n: -len(ANSWERS[n]))  # not in length order: output order must still hold
    return [load_audio(str(wavs / f"{n}.wav"), SAMPLE_RATE) for n in names], [ANSWERS[n] for n in names]


def _spy_windows(asr) -> list[int]:
    """Record the mel-frame count of every encoder call on speech (not the cached all-padding windows)."""
    seen, encode = [], asr._encode
    asr._encode = lambda mels: (np.ptp(mels) > 0 and seen.append(mels.shape[-1]), encode(mels))[1]
    return seen


def test_window_frames_follow_clip_length():
    assert window_frames(3 * SAMPLE_RATE) == window_frames(1) == MIN_FRAMES < WINDOW_FRAMES
    assert window_frames(15 * SAMPLE_RATE) == 1600  # 1500 frames + margin, rounded up to whole seconds
    assert window_frames(int(29.9 * SAMPLE_RATE)) == WINDOW_FRAMES
    assert window_frames(3 * SAMPLE_RATE, padded=True) == WINDOW_FRAMES
    assert all(window_frames(n) <= window_frames(n + 8000) for n in range(0, 480000, 8000))


@pytest.mark.parametrize("backend", ["faster-whisper", "openai-whisper"])
def test_short_windows_keep_each_clips_transcript_in_order(backend, clips, openai_checkpoint):
    path = "tiny.en" if backend == "faster-whisper" else str(openai_checkpoint)
    fast, padded = load_asr(f"{backend}:{path}", batch_size=4), load_asr(f"{backend}:{path}", batch_size=4, padded=True)
    audios, texts = clips
    fast.transcribe(audios[:1])  # fills the padding-window cache (one full 30 s encode, once per backend)
    windows = _spy_windows(fast)
    hyps, base = fast.transcribe(audios), padded.transcribe(audios)
    wer = [score(t, h).wer for t, h in zip(texts, hyps)]
    base_wer = [score(t, h).wer for t, h in zip(texts, base)]
    assert all(w <= b + 0.05 for w, b in zip(wer, base_wer)), [x for x in zip(texts, hyps, base, wer, base_wer) if x[3] > x[4]]
    assert np.mean(wer) <= 0.1, hyps  # each clip came back at its own index, not a neighbour's
    assert windows and max(windows) == window_frames(max(len(a) for a in audios)) < WINDOW_FRAMES  # short windows only


def test_clip_longer_than_the_window_takes_the_long_form_path(clips, faster_asr):
    audios, texts = clips
    gap = np.zeros(SAMPLE_RATE, np.float32)
    long, said = [], []
    while sum(len(a) for a in long) <= (WINDOW_S + 2) * SAMPLE_RATE:
        k = len(said) % len(audios)
        long += [audios[k], gap]
        said.append(texts[k])
    asr = load_asr("faster-whisper:tiny.en")
    asr.transcribe(audios[:1])
    calls, long_form = [], asr._long
    asr._long = lambda a: (calls.append(len(a)), long_form(a))[1]
    windows = _spy_windows(asr)
    hyps = asr.transcribe([audios[0], np.concatenate(long)])
    assert calls == [len(np.concatenate(long))]  # only the long clip, once
    assert windows and max(windows) < WINDOW_FRAMES  # the short clip still took a short window
    assert score(texts[0], hyps[0]).wer <= 0.1
    assert score(" ".join(said), hyps[1]).wer <= 0.15, hyps[1]


def test_bare_model_takes_the_device_default_and_auto_measures_once(capfd, monkeypatch, tmp_path):
    import filtering.asr as asr_mod

    monkeypatch.setenv("VOCALNET_CACHE", str(tmp_path))
    monkeypatch.setattr(asr_mod, "_FASTEST", {})
    # No timing decides a transcript: a bare model is the device's default, without measuring anything.
    assert asr_mod.resolve_spec("tiny.en") == "faster-whisper:tiny.en:int8"
    assert asr_mod.resolve_spec("tiny.en", device="cuda") == "faster-whisper:tiny.en:float16"
    assert asr_mod.resolve_spec("tiny.en", device="cuda", backend="auto") == "faster-whisper:tiny.en:float16"  # no GPU probe
    assert asr_mod._FASTEST == {} and not (tmp_path / "asr_backend_choice.json").exists()
    assert load_asr("tiny.en").name == "faster-whisper:tiny.en:int8"
    with pytest.raises(ValueError, match="'fastest'"):
        asr_mod.resolve_spec("tiny.en", backend="fastest")
    # Asked for, the race runs once per CPU (cached in the process, then on disk for other actors).
    choice = fastest_backend("tiny.en")
    assert choice in {("faster-whisper", "int8"), ("faster-whisper", "float32"), ("openai-whisper", "fp32")}
    assert fastest_backend("tiny.en") == choice  # cached in the process: no second measurement
    err = capfd.readouterr().err
    assert err.count("--asr tiny.en ->") == 1 and "probe: faster-whisper int8" in err, err
    monkeypatch.setattr(asr_mod, "_FASTEST", {})  # a new process (another Ray actor) on the same CPU
    spec = asr_mod.resolve_spec("tiny.en", backend="auto")
    assert "measured earlier on this CPU" in capfd.readouterr().err
    # The job resolves the spec once on the driver; the explicit spec names the same backend everywhere.
    assert spec.startswith(f"{choice[0]}:tiny.en") and asr_mod.resolve_spec(spec, backend="auto") == spec
    asr = load_asr(spec)
    assert asr.name.startswith(choice[0]) and asr.name.endswith(":fp32" if choice[0] == "openai-whisper" else f":{choice[1]}")
