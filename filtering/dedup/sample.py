"""A planted duplicate sample for tests and `benchmarks/dedup_quality.py`: real espeak-ng speech (the sample
voices), each clip planted as transformed copies, with negatives.

    base/      manifest.jsonl: `orig_III` (sentence III by voice III mod 4)
    copies/    manifest.jsonl: `T_III` for each transform T of `TRANSFORMS` (the recording re-encoded, resampled,
               cropped, re-gained or noised), `voice_III` (the same sentence by the next voice: a negative),
    eval/      manifest.jsonl: `evalmp3_J` (an MP3 copy of base clip `orig_J`, another transcript) and `evaltext_J` (a long text that
               base clip `long_J` reads, by another voice: an n-gram match)

Ids name what each row is, so a test or benchmark scores a dedup run from the decisions alone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from tokenization.audio import resample
from tokenization.espeak import espeak_to_wav
from tokenization.sample_corpus import VOICES, sentences

RATE = 16000


def _mp3(x: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, x, RATE, format="MP3")
    buf.seek(0)
    y, r = sf.read(buf, dtype="float32")
    return resample(y, r, RATE)


def _noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    power = float(np.mean(x.astype(np.float64) ** 2)) / 10 ** (snr_db / 10)
    return (x + np.random.default_rng(seed).normal(0, np.sqrt(power), len(x))).astype(np.float32)


# name -> (clip, seed) -> clip; "exact" is the same samples in another container (FLAC), so the same decoded audio
TRANSFORMS = {
    "exact": lambda x, s: x,
    "mp3": lambda x, s: _mp3(x),
    "resample": lambda x, s: resample(resample(x, RATE, 8000), 8000, RATE),
    "crop": lambda x, s: x[len(x) // 10:],
    "gainup": lambda x, s: np.clip(x * 10 ** (6 / 20), -1, 1).astype(np.float32),
    "gaindown": lambda x, s: (x * 10 ** (-6 / 20)).astype(np.float32),
    "noise": lambda x, s: _noise(x, 30.0, s),
}


def _say(text: str, speaker: str, path: Path) -> np.ndarray:
    voice, wpm = VOICES[speaker]
    wav = path.with_suffix(".raw.wav")
    espeak_to_wav(text, wav, voice, wpm)
    x, r = sf.read(wav, dtype="float32")
    wav.unlink()
    return resample(x if x.ndim == 1 else x.mean(1), r, RATE)


def _write(folder: Path, rows: list[dict]) -> Path:
    lines = [json.dumps({"id": r["id"], "audio_path": r["audio_path"], "text": r["text"], "speaker": r["speaker"],
                         "source": folder.name, "language": "en"}) for r in rows]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "manifest.jsonl"


def make_dedup_sample(out_dir: str | Path, n: int = 4, n_long: int = 2, transforms: tuple[str, ...] = tuple(TRANSFORMS)) -> dict[str, Path]:
    """Write the three corpora (wavs/flacs + manifest.jsonl each) under `out_dir`; returns {name: manifest}.

    Args:
        n: base sentences (each planted as every transform and read by another voice).
        n_long: long texts (two sentences, >= 13 words) in base and, by another voice, in eval; plus as many
            MP3 copies of base clips in eval.
    """
    out = Path(out_dir)
    done = out / "done.json"
    if done.exists() and json.loads(done.read_text()) == [n, n_long, list(transforms)]:
        return {k: out / k / "manifest.jsonl" for k in ("base", "copies", "eval")}
    speakers, texts = list(VOICES), sentences()
    base, copies, evals = [], [], []
    for sub in ("base", "copies", "eval"):
        (out / sub / "audio").mkdir(parents=True, exist_ok=True)

    def add(rows: list, sub: str, rid: str, text: str, spk: str, x: np.ndarray, fmt: str = "WAV") -> None:
        rel = f"audio/{rid}.{fmt.lower()}"
        sf.write(out / sub / rel, x, RATE, format=fmt, subtype="PCM_16")
        rows.append({"id": rid, "audio_path": rel, "text": text, "speaker": spk})

    for i in range(n):
        spk, other = speakers[i % len(speakers)], speakers[(i + 1) % len(speakers)]
        x = _say(texts[i], spk, out / "base" / "audio" / f"orig_{i:03d}")
        x = np.asarray(sf.read(io.BytesIO(_pcm16(x)), dtype="float32")[0])  # as the WAV holds it: copies start from it
        add(base, "base", f"orig_{i:03d}", texts[i], spk, x)
        for t in transforms:
            add(copies, "copies", f"{t}_{i:03d}", texts[i], spk, TRANSFORMS[t](x, i), "FLAC" if t == "exact" else "WAV")
        add(copies, "copies", f"voice_{i:03d}", texts[i], other, _say(texts[i], other, out / "copies" / "audio" / f"v{i}"))
    for j in range(n_long):
        i = n + j
        text = f"{texts[2 * i % len(texts)]} {texts[(2 * i + 1) % len(texts)]}"
        spk, other = speakers[i % len(speakers)], speakers[(i + 2) % len(speakers)]
        add(base, "base", f"long_{j:03d}", text, spk, _say(text, spk, out / "base" / "audio" / f"l{j}"))
        add(evals, "eval", f"evaltext_{j:03d}", text, other, _say(text, other, out / "eval" / "audio" / f"e{j}"))
        src = base[j]  # orig_J
        y = sf.read(out / "base" / src["audio_path"], dtype="float32")[0]
        add(evals, "eval", f"evalmp3_{j:03d}", f"held out clip number {j}", src["speaker"], _mp3(y))  # audio alone matches
    paths = {"base": _write(out / "base", base), "copies": _write(out / "copies", copies), "eval": _write(out / "eval", evals)}
    done.write_text(json.dumps([n, n_long, list(transforms)]))
    return paths


def _pcm16(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()
