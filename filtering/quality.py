"""Audio quality beyond WER: Microsoft's DNSMOS (P.835 + P.808) and Silero VAD, as Ray-free scorers.

Why: a multi-codebook Talker has no flow-matching stage to clean up after it, so hiss and dead
air in its training audio come out in its speech. A perfect transcript says nothing about either.

    >>> scorer = QualityScorer(("dnsmos", "vad"))
    >>> scorer.score([samples_16k])[0]          # one dict per clip, the seven QUALITY_COLUMNS
    {'dnsmos_sig': 3.1, 'dnsmos_bak': 3.9, 'dnsmos_ovrl': 2.8, 'dnsmos_p808': 3.3,
     'speech_ratio': 0.82, 'lead_silence_s': 0.1, 'trail_silence_s': 0.3}

DNSMOS is computed exactly as the reference (`speechmos.dnsmos`, Microsoft's DNS-Challenge
`dnsmos_local.py`) does: 16 kHz, a clip shorter than 9.01 s is doubled until it fills one
window, 9.01 s windows every 1 s, the P.808 model on the window's log-mel (all but the last
160 samples), the non-personalized P.835 polynomial mapping, the mean over windows. We only
run it cheaper: one ONNX session per scorer with a fixed thread count (no idle spinning),
the windows of a clip in calls of up to `WINDOWS_PER_CALL`. The ONNX files are the ones `speechmos` ships.

A clip's scores never depend on the clips beside it: each clip goes through its own calls, whose
shapes follow its own length, and the mel projection is numpy's own loop (no BLAS, whose result
bits follow the thread count and the matrix shape). Windows of several clips in one call gave the
same clip other bits in another batch (`dnsmos_p808` 3.3657017 vs 3.3657014, issue 27); one clip per
call costs about the same (the models' time is per window).

VAD is Silero VAD's ONNX model through its own package (`silero_vad.get_speech_timestamps`,
default thresholds): `speech_ratio` = speech seconds / clip seconds; `lead_silence_s` and
`trail_silence_s` are the silence before the first and after the last speech segment (None when
no speech is found).
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Sequence

import numpy as np

from tokenization.audio import WHISPER_SAMPLE_RATE as SAMPLE_RATE
from tokenization.dialogue_schema import QualityScore

DNSMOS, VAD = "dnsmos", "vad"
SCORERS = (DNSMOS, VAD)  # what `--quality` may name
QUALITY_COLUMNS = tuple(f.name for f in fields(QualityScore))  # the contract's columns, in its order
DNSMOS_COLUMNS = tuple(c for c in QUALITY_COLUMNS if c.startswith("dnsmos_"))
VAD_COLUMNS = tuple(c for c in QUALITY_COLUMNS if c not in DNSMOS_COLUMNS)
COLUMNS = {DNSMOS: DNSMOS_COLUMNS, VAD: VAD_COLUMNS}
HIGHER_IS_WORSE = ("lead_silence_s", "trail_silence_s")  # the rest: lower is worse (a row's gate is its worst clip)

INPUT_LENGTH = 9.01  # s: the P.835 model's window, as the reference spells it
P808_CUT = 160  # samples: the P.808 features leave out the window's last hop
# Non-personalized P.835 mapping of the raw (sig, bak, ovrl) outputs, from the reference.
POLY = {"dnsmos_sig": (-0.08397278, 1.22083953, 0.0052439), "dnsmos_bak": (-0.13166888, 1.60915514, -0.39604546),
        "dnsmos_ovrl": (-0.06766283, 1.11546468, 0.04602535)}
WINDOWS_PER_CALL = 16  # windows of one clip per ONNX call: bounded memory (16 x 9 s x 4 B = 9 MB)


def parse_quality(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """`--quality dnsmos,vad` -> ("dnsmos", "vad") in SCORERS order; "" / None -> (). Raises ValueError on an unknown name."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else (spec or ())) if s.strip()]
    unknown = sorted(set(names) - set(SCORERS))
    if unknown:
        raise ValueError(f"unknown quality scorer {unknown[0]!r} (choose from {', '.join(SCORERS)})")
    return tuple(s for s in SCORERS if s in names)


def quality_columns(scorers: Sequence[str]) -> tuple[str, ...]:
    """The columns a run with these scorers fills."""
    return tuple(c for s in scorers for c in COLUMNS[s])


def worst(column: str, values) -> float | None:
    """A dialogue's gate value for `column`: its worst scored clip (None values ignored; None if none)."""
    v = [x for x in values if x is not None]
    return None if not v else (max(v) if column in HIGHER_IS_WORSE else min(v))


def _model_path(name: str) -> str:
    import speechmos

    path = os.path.join(os.path.dirname(speechmos.__file__), "dnsmos_models", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: DNSMOS model missing from the speechmos package")
    return path


def _session(path: str, device: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


def dnsmos_windows(audio: np.ndarray) -> list[np.ndarray]:
    """The reference's windows of one 16 kHz clip: [144160] float32 each, after doubling a short clip."""
    fs = SAMPLE_RATE
    len_samples = int(INPUT_LENGTH * fs)
    audio = np.asarray(audio, np.float32)
    if len(audio) == 0:
        raise ValueError("empty clip")
    while len(audio) < len_samples:
        audio = np.append(audio, audio)
    num_hops = int(np.floor(len(audio) / fs) - INPUT_LENGTH) + 1
    out = []
    for idx in range(num_hops):  # the same index arithmetic as the reference, so the same windows
        seg = audio[int(idx * fs): int((idx + INPUT_LENGTH) * fs)]
        if len(seg) >= len_samples:
            out.append(seg)
    return out


class Dnsmos:
    """DNSMOS P.835 (`sig_bak_ovr.onnx`) and P.808 (`model_v8.onnx`) sessions, loaded once.

    Args:
        device: "cpu" or "cuda" (onnxruntime's CUDA provider where it is installed, else CPU).
        threads: onnxruntime intra-op threads (1 per actor CPU: no spinning threads on a shared node).
    """

    def __init__(self, device: str = "cpu", threads: int = 1):
        import librosa

        self.p835 = _session(_model_path("sig_bak_ovr.onnx"), device, threads)
        self.p808 = _session(_model_path("model_v8.onnx"), device, threads)
        seg = int(INPUT_LENGTH * SAMPLE_RATE) - P808_CUT
        # The reference's melspectrogram: n_fft 321, hop 160, 120 mels; the filter bank built once.
        self._mel_basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=321, n_mels=120)
        self._n_frames = 1 + seg // 160

    def _p808_features(self, windows: np.ndarray) -> np.ndarray:
        """[N, 144160] windows -> [N, 900, 120] log-mel, as the reference's `audio_melspec` on each."""
        import librosa

        stft = librosa.stft(windows[:, :-P808_CUT], n_fft=321, hop_length=160)  # [N, 161, 900], batched
        # optimize=False: numpy's own loop, the same bits whatever the BLAS threads (no tensordot)
        mel = np.einsum("...ft,mf->...mt", np.abs(stft) ** 2, self._mel_basis, optimize=False)
        feats = [(librosa.power_to_db(m, ref=np.max) + 40) / 40 for m in mel]  # ref = each window's own max
        return np.stack(feats).transpose(0, 2, 1).astype(np.float32)

    def score(self, clips: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """16 kHz float32 clips in [-1, 1] -> one dict of DNSMOS_COLUMNS per clip, each scored on its own."""
        return [self._score_clip(clip) for clip in clips]

    def _score_clip(self, clip: np.ndarray) -> dict[str, float]:
        """One clip's scores: its windows in calls of up to WINDOWS_PER_CALL (shapes follow the clip alone)."""
        windows = dnsmos_windows(np.clip(clip, -1.0, 1.0))
        raw, p808 = [], []
        for s in range(0, len(windows), WINDOWS_PER_CALL):
            batch = np.stack(windows[s: s + WINDOWS_PER_CALL]).astype(np.float32)
            raw.append(self.p835.run(None, {"input_1": batch})[0])  # [n, 3]: sig, bak, ovrl
            p808.append(self.p808.run(None, {"input_1": self._p808_features(batch)})[0][:, 0])  # [n]
        raw_a, p808_a = np.concatenate(raw), np.concatenate(p808)
        out = {c: float(np.mean(np.polyval(POLY[c], raw_a[:, k])))
               for k, c in enumerate(("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"))}
        out["dnsmos_p808"] = float(np.mean(p808_a))
        return out


class SileroVad:
    """Silero VAD (the ONNX model the `silero-vad` wheel ships, through its own API), loaded once."""

    def __init__(self):
        import torch

        threads = torch.get_num_threads()
        from silero_vad import get_speech_timestamps, load_silero_vad  # its import sets torch to 1 thread

        torch.set_num_threads(threads)  # give the process its setting back (in-process runs share torch)
        self.model = load_silero_vad(onnx=True)
        self._timestamps = get_speech_timestamps

    def score(self, clips: Sequence[np.ndarray]) -> list[dict[str, float | None]]:
        """16 kHz float32 clips -> one dict of VAD_COLUMNS per clip."""
        import torch

        out = []
        for clip in clips:
            n = len(clip)
            spans = self._timestamps(torch.from_numpy(np.ascontiguousarray(clip, np.float32)), self.model,
                                     sampling_rate=SAMPLE_RATE) if n else []
            speech = sum(s["end"] - s["start"] for s in spans)
            out.append({"speech_ratio": float(speech / n) if n else 0.0,
                        "lead_silence_s": spans[0]["start"] / SAMPLE_RATE if spans else None,
                        "trail_silence_s": (n - spans[-1]["end"]) / SAMPLE_RATE if spans else None})
        return out


class QualityScorer:
    """The scorers a run asked for (`--quality`), each model loaded once.

    Args:
        scorers: names from SCORERS.
        device: "cpu" or "cuda" (DNSMOS only; VAD is cheap on CPU).
        threads: onnxruntime threads for DNSMOS.
    """

    def __init__(self, scorers: Sequence[str], device: str = "cpu", threads: int = 1):
        self.scorers = parse_quality(scorers)
        self.dnsmos = Dnsmos(device, threads) if DNSMOS in self.scorers else None
        self.vad = SileroVad() if VAD in self.scorers else None

    def score(self, clips: Sequence[np.ndarray]) -> list[dict]:
        """16 kHz float32 clips -> one dict per clip holding the columns of the configured scorers."""
        out: list[dict] = [{} for _ in clips]
        if not clips:
            return out
        for model in (self.dnsmos, self.vad):
            if model is not None:
                for d, s in zip(out, model.score(clips)):
                    d.update(s)
        return out
