import numpy as np
import pytest
import soundfile as sf

from tokenization.audio import BadAudio, load_audio


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_formats_mono_mixdown_and_resampling(tmp_path, fmt, ext):
    rate = 16000
    t = np.arange(rate) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], axis=1)
    path = tmp_path / f"a.{ext}"
    sf.write(path, stereo, rate, format=fmt)
    wave = load_audio(str(path), 24000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 24000) < 24000 * 0.08  # MP3/OGG pad a little
    assert 0.05 < np.abs(wave).max() < 1.0


def _raw(tmp_path, name, data: bytes):
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


def _write(tmp_path, name, samples, rate=16000, subtype=None):
    path = tmp_path / name
    sf.write(path, samples, rate, subtype=subtype)
    return str(path)


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda d: str(d / "missing.wav"), "file not found"),
        (lambda d: _raw(d, "zero.wav", b""), "zero-byte file"),
        (lambda d: _raw(d, "text.wav", b"hello, not audio"), "not readable as audio"),
        (lambda d: _write(d, "silence.wav", np.zeros(16000)), "all silence"),
        (lambda d: _write(d, "short.wav", 0.3 * np.ones(400)), "too short or truncated"),
        (lambda d: _write(d, "nan.wav", np.where(np.arange(16000) == 5, np.nan, 0.1), subtype="FLOAT"), "NaN or inf"),
        (lambda d: _write(d, "long.wav", 0.1 * np.sin(np.arange(16000 * 12) / 5.0)), "over --max-duration"),
    ],
)
def test_bad_audio_reasons_name_the_file(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(BadAudio, match=reason) as err:
        load_audio(path, 24000, max_seconds=10)
    assert path in str(err.value)


def test_truncated_wav(tmp_path):
    path = _write(tmp_path, "full.wav", 0.2 * np.sin(np.arange(16000) / 3.0))
    data = open(path, "rb").read()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:600])  # header promises 1 s, the data stops after ~0.02 s
    with pytest.raises(BadAudio, match="cut.wav"):
        load_audio(str(cut), 24000)
