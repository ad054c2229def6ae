"""The bundled sample dialogue set, made with espeak-ng: Q/A pairs, some with deliberately wrong assistant audio.

Real speech with known text, so a real ASR model (Whisper tiny.en) produces real keeps and
real rejections. Sentences and voices were picked so that tiny.en transcribes the matched
assistant answers exactly (both backends); the mismatches are gross, so any sane ASR rejects them:

    other_sentence   assistant audio speaks a different sentence      -> wer
    truncated        assistant audio cut after 50 % of its samples    -> wer (deletions)
    silence          1.5 s of faint noise instead of speech           -> empty_hypothesis / wer; `speech_ratio` with SAMPLE_RULES
    second_turn      multi-turn dialogue whose 2nd answer is wrong     -> wer (turn 3)
    noisy            the right answer under white noise (NOISY_SNR_DB)  -> kept on WER; `dnsmos` with SAMPLE_RULES
    unreadable       zero-byte user audio                              -> quarantine (load)
    duplicate        same audio as another dialogue, new id            -> kept; audit shows it by audio_sha1

    >>> manifest = make_dialogue_sample("out/dialogues")   # dialogues.jsonl + wavs/
    >>> expected = expected_outcomes()                      # {dialogue_id: "keep"|"reject"|"quarantine"}
    >>> quality_args(manifest)                              # ["--quality", "dnsmos,vad", "--rules", ".../rules.yaml"]

The same set is also written in the LLaMA-Omni/VocalNet JSON layout (`dialogues_llama_omni.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from tokenization.sample_corpus import espeak_to_wav

VOICES = {"user": ("en-us", 150), "asst_f": ("en-us+f3", 140), "asst_m": ("en-us+m3", 140)}

# (dialogue id, assistant voice, [(question, answer text, what the assistant audio really is)]);
# audio spec: None = speak the answer; "say:<text>" = speak other text; "truncate"; "silence"; "noisy".
DIALOGUES = [
    ("d01", "asst_m", [("What is the weather like today?", "It will be sunny and warm all day.", None)]),
    ("d02", "asst_f", [("Where is the nearest library?", "The library is next to the post office.", None)]),
    ("d03", "asst_m", [("How many days are in a week?", "There are seven days in a week.", None)]),
    ("d04", "asst_f", [("What is your favorite color?", "My favorite color is blue.", None)]),
    ("d05", "asst_m", [("How do I get to the station?", "Walk straight ahead and turn left at the bank.", None)]),
    ("d06", "asst_f", [("Is it going to rain tomorrow?", "No, the sky will be clear tomorrow.", None)]),
    ("d07", "asst_f", [("How old is the house?", "The house is about one hundred years old.", None)]),
    ("d08", "asst_m", [("When does the store open?", "It is open from Monday to Friday.", None)]),
    ("d09", "asst_f", [("Who wrote this letter?", "My sister wrote it last week.", None),
                       ("Where is the nearest library?", "The library is next to the post office.", None)]),
    ("m01_other_sentence", "asst_m", [("What is the capital of France?", "The capital of France is Paris.",
                                       "say:My sister wrote it last week.")]),
    ("m02_truncated", "asst_f", [("Where is the nearest library?", "The library is next to the post office.", "truncate")]),
    ("m03_silence", "asst_m", [("Can I have some water?", "Of course, here is a glass of water.", "silence")]),
    ("m04_second_turn", "asst_m", [("When does the store open?", "It is open from Monday to Friday.", None),
                                   ("How old is the house?", "The house is about one hundred years old.",
                                    "say:There are seven days in a week.")]),
    ("m05_noisy", "asst_f", [("Which color do you like best?", "My favorite color is blue.", "noisy")]),
]
NOISY_ID = "m05_noisy"
NOISY_SNR_DB = 5.0
# The sample's quality rules (`--quality dnsmos,vad --rules` this, written beside the manifest as
# RULES_FILE): the noisy answer is rejected by `dnsmos`, every clean espeak answer passes.
RULES_FILE = "rules.yaml"
# Clean answers score OVRL 2.0-2.8, the noisy one 1.7; the faint-noise "silence" answer has no speech at all.
SAMPLE_RULES = {"min_dnsmos_ovrl": 1.85, "min_speech_ratio": 0.3, "max_lead_silence_s": 1.0}
UNREADABLE_ID = "q01_unreadable"
DUPLICATE_ID, DUPLICATE_OF = "d10_duplicate", "d04"


def expected_outcomes(quality: bool = False) -> dict[str, str]:
    """{dialogue_id: "keep"|"reject"|"quarantine"}; `quality`: filtered with `--quality dnsmos,vad` and SAMPLE_RULES
    (only then is the noisy answer rejected: its transcript is right)."""
    out = {d: ("reject" if d.startswith("m") else "keep") for d, _, _ in DIALOGUES}
    out[NOISY_ID] = "reject" if quality else "keep"
    out[UNREADABLE_ID] = "quarantine"
    out[DUPLICATE_ID] = "keep"
    return out


def quality_args(manifest: str | Path) -> list[str]:
    """The filter flags that score the sample's quality and apply SAMPLE_RULES (see `expected_outcomes(quality=True)`)."""
    return ["--quality", "dnsmos,vad", "--rules", str(Path(manifest).parent / RULES_FILE)]


def _speak(out: Path, rel: str, text: str, voice: str) -> str:
    if not (out / rel).exists():
        espeak_to_wav(text, out / rel, *VOICES[voice])
    return rel


def _assistant_audio(out: Path, rel: str, answer: str, spec: str | None, voice: str) -> str:
    if spec is None:
        return _speak(out, rel, answer, voice)
    if spec.startswith("say:"):
        return _speak(out, rel, spec[4:], voice)
    if spec == "truncate":
        full = _speak(out, rel.replace(".wav", "_full.wav"), answer, voice)
        samples, rate = sf.read(out / full, dtype="float32")
        sf.write(out / rel, samples[: int(0.5 * len(samples))], rate, subtype="PCM_16")
        return rel
    if spec == "silence":
        rate = 22050
        noise = np.random.default_rng(0).normal(0.0, 0.002, int(1.5 * rate)).astype(np.float32)
        sf.write(out / rel, noise, rate, subtype="PCM_16")  # faint noise: readable, not "all silence"
        return rel
    if spec == "noisy":
        clean = _speak(out, rel.replace(".wav", "_clean.wav"), answer, voice)
        samples, rate = sf.read(out / clean, dtype="float32")
        sf.write(out / rel, add_noise(samples, NOISY_SNR_DB), rate, subtype="PCM_16")
        return rel
    raise ValueError(spec)


def add_noise(samples: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White Gaussian noise at `snr_db` below the clip's mean power (fixed seed), clipped to [-1, 1]."""
    x = np.asarray(samples, np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 1.0, len(x))
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / 10 ** (snr_db / 10) / np.mean(noise ** 2))
    return np.clip(x + noise, -1.0, 1.0).astype(np.float32)


def pad_silence(samples: np.ndarray, rate: int, lead_s: float, trail_s: float) -> np.ndarray:
    """The clip with `lead_s` / `trail_s` seconds of digital silence before / after it."""
    z = lambda s: np.zeros(int(round(s * rate)), np.float32)  # noqa: E731
    return np.concatenate([z(lead_s), np.asarray(samples, np.float32), z(trail_s)])


def make_dialogue_sample(out_dir: str | Path) -> Path:
    """Write wavs/ plus `dialogues.jsonl` (native) and `dialogues_llama_omni.json`; returns the JSONL path."""
    out = Path(out_dir)
    manifest = out / "dialogues.jsonl"
    if manifest.exists():
        return manifest
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    records = []
    for did, voice, pairs in DIALOGUES:
        turns = []
        for k, (question, answer, spec) in enumerate(pairs):
            q = _speak(out, f"wavs/{did}_q{k}.wav", question, "user")
            a = _assistant_audio(out, f"wavs/{did}_a{k}.wav", answer, spec, voice)
            turns += [{"role": "user", "text": question, "audio_path": q},
                      {"role": "assistant", "text": answer, "audio_path": a}]
        records.append({"id": did, "source": "espeak-dialogues", "language": "en", "speaker": voice, "turns": turns})
    dup = json.loads(json.dumps(next(r for r in records if r["id"] == DUPLICATE_OF)))
    dup["id"] = DUPLICATE_ID
    records.append(dup)
    (out / "wavs" / f"{UNREADABLE_ID}_q0.wav").write_bytes(b"")
    _speak(out, f"wavs/{UNREADABLE_ID}_a0.wav", "It will be sunny and warm all day.", "asst_m")
    records.append({"id": UNREADABLE_ID, "source": "espeak-dialogues", "language": "en", "speaker": "asst_m",
                    "turns": [{"role": "user", "text": "What is the weather like today?", "audio_path": f"wavs/{UNREADABLE_ID}_q0.wav"},
                              {"role": "assistant", "text": "It will be sunny and warm all day.", "audio_path": f"wavs/{UNREADABLE_ID}_a0.wav"}]})
    (out / RULES_FILE).write_text("".join(f"{k}: {v}\n" for k, v in SAMPLE_RULES.items()), "utf-8")
    (out / "dialogues_llama_omni.json").write_text(json.dumps([_to_llama_omni(r) for r in records], indent=1), "utf-8")
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    tmp.replace(manifest)
    return manifest


def _to_llama_omni(rec: dict) -> dict:
    convs, speech, tgt = [], [], []
    for t in rec["turns"]:
        if t["role"] == "user":
            convs.append({"from": "human", "value": "<speech>\n" + t["text"]})
            speech.append(t["audio_path"])
        else:
            convs.append({"from": "gpt", "value": t["text"]})
            tgt.append(t["audio_path"])
    return {"id": rec["id"], "speech": speech[0] if len(speech) == 1 else speech, "conversations": convs,
            "tgt_speech": tgt[0] if len(tgt) == 1 else tgt, "source": rec["source"], "speaker": rec["speaker"]}
