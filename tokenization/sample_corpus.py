"""The bundled sample corpus: real speech with known transcripts, made with espeak-ng.

Deterministic (fixed sentences, voices and speaking rates), so tests and the demo see the
same audio on every machine with the same espeak-ng (the program, or the library the
`espeakng-loader` wheel ships when the program is absent). Several voices stand in for speakers.

    >>> manifest = make_tts_sample("out/sample")      # JSONL manifest + wavs/<speaker>/*.wav
    >>> make_ljspeech_layout("out/lj")                 # metadata.csv + wavs/
    >>> make_libritts_layout("out/libritts")           # <speaker>/<chapter>/<id>.wav + .normalized.txt
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from tokenization.espeak import espeak_to_wav  # the espeak-ng program, or its library from the espeakng-loader wheel

# espeak-ng voice (+variant) per speaker; words per minute varies per speaker as real speakers do.
VOICES = {
    "spk_us_m": ("en-us", 165),
    "spk_us_f": ("en-us+f3", 150),
    "spk_gb_m": ("en-gb", 175),
    "spk_sc_f": ("en-gb-scotland+f2", 160),
}


def sentences() -> list[str]:
    text = resources.files("tokenization.sample").joinpath("sentences.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _utterances(n: int | None):
    """(utt_id, speaker, text) round-robin over voices."""
    speakers = list(VOICES)
    for i, text in enumerate(sentences()[:n]):
        spk = speakers[i % len(speakers)]
        yield f"{spk}_{i:03d}", spk, text


def make_tts_sample(out_dir: str | Path, n: int | None = None) -> Path:
    """Write wavs/<speaker>/<utt>.wav and manifest.jsonl (relative audio paths); returns the manifest."""
    out = Path(out_dir)
    manifest = out / "manifest.jsonl"
    if manifest.exists() and (n is None or sum(1 for _ in manifest.open()) == n):
        return manifest
    lines = []
    for utt_id, spk, text in _utterances(n):
        voice, wpm = VOICES[spk]
        rel = f"wavs/{spk}/{utt_id}.wav"
        espeak_to_wav(text, out / rel, voice, wpm)
        lines.append(json.dumps({"id": utt_id, "audio_path": rel, "text": text, "speaker": spk, "source": "espeak-sample", "language": "en"}))
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return manifest


def make_ljspeech_layout(out_dir: str | Path, n: int | None = 6) -> Path:
    """LJSpeech layout: metadata.csv (`id|text|normalized text`) + wavs/<id>.wav."""
    out = Path(out_dir)
    rows = []
    for utt_id, spk, text in _utterances(n):
        lj_id = f"LJ001-{len(rows) + 1:04d}"
        espeak_to_wav(text, out / "wavs" / f"{lj_id}.wav", *VOICES[spk])
        rows.append(f"{lj_id}|{text}|{text}")
    (out / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def make_libritts_layout(out_dir: str | Path, n: int | None = 6) -> Path:
    """LibriTTS layout: <speaker>/<chapter>/<speaker>_<chapter>_<utt>.wav + .normalized.txt."""
    out = Path(out_dir)
    for i, (_, spk, text) in enumerate(_utterances(n)):
        speaker_num = str(100 + list(VOICES).index(spk))
        stem = out / speaker_num / "7" / f"{speaker_num}_7_{i:06d}"
        espeak_to_wav(text, stem.with_suffix(".wav"), *VOICES[spk])
        stem.with_suffix(".normalized.txt").write_text(text, encoding="utf-8")
    return out
