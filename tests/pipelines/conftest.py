"""Fixtures for job-level tests: a corpus mixing good speech with every kind of bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

# name -> the substring its quarantine reason must contain
BAD_KINDS = {
    "zero_byte": "zero-byte file",
    "not_audio": "not readable as audio",
    "truncated": "too short or truncated",
    "silence": "all silence",
    "nan": "NaN or inf samples",
    "missing": "file not found",
    "empty_text": "empty or missing transcript",
    "malformed": "malformed JSON line",
    "not_utf8": "line is not UTF-8",
    "duplicate": "duplicate id",
    "too_long": "over --max-duration",
}


@pytest.fixture(scope="session")
def dirty_corpus(tts_sample, tmp_path_factory):
    """JSONL manifest: 12 good espeak utterances + one line of each BAD_KINDS (max duration 8 s)."""
    root = tmp_path_factory.mktemp("dirty")
    good = [json.loads(line) for line in tts_sample.read_text().splitlines()][:12]
    shutil.copytree(tts_sample.parent / "wavs", root / "wavs")
    bad_dir = root / "bad"
    bad_dir.mkdir()
    rate = 22050
    (bad_dir / "zero.wav").write_bytes(b"")
    (bad_dir / "text.wav").write_text("this is not audio")
    full = (root / good[0]["audio_path"]).read_bytes()
    (bad_dir / "truncated.wav").write_bytes(full[:500])
    sf.write(bad_dir / "silence.wav", np.zeros(rate), rate)
    sf.write(bad_dir / "nan.wav", np.where(np.arange(rate) == 100, np.nan, 0.1), rate, subtype="FLOAT")
    long_audio = np.concatenate([sf.read(root / g["audio_path"])[0] for g in good[:4]])
    sf.write(bad_dir / "long.wav", long_audio, rate)

    def row(i, path, text="some words"):
        return json.dumps({"id": f"bad_{i}", "audio_path": path, "text": text, "speaker": "spk_bad", "source": "dirty"})

    lines = [json.dumps(g) for g in good]
    lines[3:3] = [row(0, "bad/zero.wav"), row(1, "bad/text.wav")]
    lines[8:8] = [row(2, "bad/truncated.wav"), row(3, "bad/silence.wav"), row(4, "bad/nan.wav")]
    lines += [
        row(5, "bad/missing.wav"),
        row(6, good[1]["audio_path"], text=""),
        '{"id": "bad_7", "audio_path": ',
        json.dumps({"id": "bad_8", "audio_path": good[2]["audio_path"], "text": "caf\u00e9"}, ensure_ascii=False),
        json.dumps(good[5]),
        row(10, "bad/long.wav"),
    ]
    data = "\n".join(lines).encode("utf-8")
    data = data.replace("caf\u00e9".encode("utf-8"), "caf\u00e9".encode("latin-1"))
    manifest = root / "manifest.jsonl"
    manifest.write_bytes(data + b"\n")
    return manifest
