"""Streaming speech generation: Thinker text chunks -> Talker frames (MTP) -> codec chunks.

    gen = StreamingGenerator(model, codec)
    for chunk in gen.stream(text="Tell me a joke"):   # or audio=np.float32 @ 16 kHz
        play(chunk.waveform)                          # chunk.codes: [t, K]
    print(gen.report)                                 # LatencyReport

Flow: the Thinker prefills the prompt (KV cache) and streams reply tokens; each token's
Fusion condition is appended to the Talker's text memory. A Talker forward needs the text of
the chunk its newest frame falls in ((k + 1) * chunk_text tokens, or the whole reply once the
Thinker stopped), so speech starts after the first text chunk. Each forward emits N+1 frames
(backbone + N MTP modules, all with KV caches). A speech chunk (chunk_frames frames, undelayed)
is decoded by the codec as soon as it is complete: with Mimi through its streaming state
(`MimiStreamDecoder`: transformer KV cache, bounded conv context), so a chunk costs the same at
minute one as at second one and equals the full decode.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from tokenization.codec import SpeechCodec
from tokenization.mimi_codec import MimiCodec
from tokenization.mimi_stream import MimiStreamDecoder
from training.data.collate import encode_prompt, eos_id
from training.model.adaptor import n_adapted_frames
from training.model.audio_encoder import build_feature_extractor, n_encoder_frames
from training.model.codebook_layout import chunk_bounds, to_codec_codes, undelay
from training.model.cpu_linear import pack_linears
from training.model.vocalnet import VocalNetM2


@dataclass
class GenerationConfig:
    max_text_tokens: int = 128
    max_frames: int | None = None  # None: what the Talker's positions allow
    temperature: float = 0.0  # 0 = greedy (text and speech)
    top_k: int = 0
    ignore_eos: bool = False  # never stop on end tokens: fixed lengths for benchmarks/tests
    streaming: bool = True  # False: whole reply first, then speech with full text context
    codec_streaming: bool = True  # decode chunks with the codec's streaming state (Mimi), flat per-chunk cost
    codec_context_frames: int | None = None  # otherwise: left context per chunk re-decode; None = all previous frames
    seed: int = 0
    clock: str = "wall"  # "cpu": process CPU time, for benchmarks on a shared machine (one torch thread)
    # CPU fp32: run every linear (Thinker, Talker, codec) on oneDNN-packed weights, a second copy
    # of the linear weights in memory for ~1.5-3x faster few-row steps (`training/model/cpu_linear.py`).
    pack_weights: bool = True


@dataclass
class Chunk:
    index: int
    waveform: np.ndarray  # (S,) float32 at codec.sample_rate
    codes: np.ndarray  # (t, K) int64
    start_frame: int
    ready_s: float  # since the request started (compute time, consumer pauses excluded)


@dataclass
class LatencyReport:
    thinker_first_chunk_s: float = 0.0  # prompt in -> first text chunk (chunk_text tokens) out
    thinker_s: float = 0.0
    talker_s: float = 0.0
    codec_decode_s: float = 0.0
    first_chunk_latency_s: float = 0.0  # prompt in -> first waveform chunk out
    total_s: float = 0.0
    audio_s: float = 0.0
    rtf: float = 0.0  # total_s / audio_s
    talker_forwards: int = 0
    frames: int = 0
    text_tokens: int = 0
    chunks: int = 0
    n_mtp: int = 0
    text: str = ""
    first_chunk_breakdown: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def make_sampler(temperature: float, top_k: int, generator: torch.Generator, banned: list[int]) -> Callable:
    """Logits [..., V] -> ids [...]; `banned` ids never come out."""

    def sample(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float().clone()
        if banned:
            logits[..., banned] = -math.inf
        if temperature <= 0:
            return logits.argmax(-1)
        logits = logits / temperature
        if top_k:
            kth = logits.topk(top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        probs = logits.softmax(-1)
        flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
        return flat.reshape(probs.shape[:-1]).to(logits.device)

    return sample


class ChunkDecoder:
    """Decode frames [a, b) with the codec, given all frames so far.

    A Mimi codec with `streaming` carries its decoder state from chunk to chunk, so the cost of a
    chunk does not grow with the reply and the output equals the full decode. Otherwise each chunk
    is re-decoded with `context_frames` of left context: equal to the full decode for a causal
    codec when that covers the receptive field (None = the whole prefix, cost grows with a).
    """

    def __init__(self, codec: SpeechCodec, context_frames: int | None = None, streaming: bool = True):
        self.codec = codec
        self.context = context_frames
        self.stream = MimiStreamDecoder(codec.model) if streaming and isinstance(codec, MimiCodec) else None

    def __call__(self, codes: np.ndarray, a: int, b: int) -> np.ndarray:
        """codes: [>= b, K] -> waveform of frames a..b-1: [(b - a) * samples_per_frame]."""
        if self.stream is not None:
            if a != self.stream.frames:  # not the next chunk (e.g. a new reply): replay frames 0..a-1 once
                self.stream.reset()
                if a:
                    self.stream.decode(codes[:a])
            return self.stream.decode(codes[a:b])
        lo = 0 if self.context is None else max(0, a - self.context)
        wav = self.codec.decode([codes[lo:b]])[0]
        spf = self.codec.samples_per_frame
        return wav[(a - lo) * spf : (b - lo) * spf].astype(np.float32)


class StreamingGenerator:
    def __init__(self, model: VocalNetM2, codec: SpeechCodec, tokenizer=None, gen: GenerationConfig | None = None):
        self.model = model.eval()
        self.codec = codec
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if self.tokenizer is None:
            raise ValueError("a tokenizer is needed (model built without tokenizer_path)")
        self.gen = gen or GenerationConfig()
        self.cfg = model.cfg
        self.feature_extractor = build_feature_extractor(self.cfg.audio)
        self.decoder = ChunkDecoder(codec, self.gen.codec_context_frames, self.gen.codec_streaming)
        if self.gen.pack_weights:
            pack_linears(model)
            if isinstance(getattr(codec, "model", None), torch.nn.Module):
                pack_linears(codec.model)
        self.report = LatencyReport()
        if codec.n_codebooks != self.cfg.talker.n_codebooks:
            raise ValueError(f"codec has {codec.n_codebooks} codebooks, Talker {self.cfg.talker.n_codebooks}")

    # --- prompt -----------------------------------------------------------------------------
    def _prompt(self, text: str | None, audio: np.ndarray | None, tts: bool) -> dict[str, torch.Tensor]:
        dev = self.cfg.device
        batch: dict[str, torch.Tensor] = {}
        n_speech = 0
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)[: self.cfg.audio.max_samples]
            f = self.feature_extractor([audio], sampling_rate=self.cfg.audio.sampling_rate, padding="max_length",
                                       max_length=self.cfg.audio.max_samples, return_attention_mask=True,
                                       return_tensors="pt")
            n_speech = n_adapted_frames(int(n_encoder_frames(f["attention_mask"].sum())), self.cfg.adaptor.k)
            batch["input_features"] = f["input_features"].to(dev)
        user_text = None if tts else text
        if not tts and audio is None and text is None:
            raise ValueError("give text or audio")
        enc = encode_prompt(self.tokenizer, self.cfg, n_speech=n_speech, user_text=user_text, reply=None)
        batch["text_ids"] = torch.tensor([enc["ids"]], device=dev)
        batch["speech_mask"] = torch.tensor([enc["speech"]], device=dev)
        return batch

    # --- main loop ----------------------------------------------------------------------------
    @torch.no_grad()
    def stream(self, text: str | None = None, audio: np.ndarray | None = None,
               reply_text: str | None = None) -> Iterator[Chunk]:
        """Yield waveform chunks as they are ready; `self.report` is complete when the loop ends.

        Args:
            text: user text (text in), or audio: user speech, float32 [S] at 16 kHz (audio in).
            reply_text: speak this reply instead of sampling one (TTS mode, stage-1 layout).
        """
        m, tc, g = self.model, self.cfg.talker, self.gen
        rep = self.report = LatencyReport(n_mtp=tc.n_mtp)
        clock = _Clock(g.clock)
        gen_t = torch.Generator().manual_seed(g.seed)
        eos = eos_id(self.tokenizer, self.cfg)
        sp = m.special
        text_sample = make_sampler(g.temperature, g.top_k, gen_t, [eos] if g.ignore_eos else [])
        speech_sample = make_sampler(g.temperature, g.top_k, gen_t, [sp.start] + ([sp.end] if g.ignore_eos else []))
        forced = self.tokenizer(reply_text, add_special_tokens=False)["input_ids"] if reply_text is not None else None
        maxd = max(tc.delays)
        max_frames = g.max_frames or (tc.max_frames - maxd - tc.n_mtp - 1)
        max_frames = min(max_frames, tc.max_frames - maxd - tc.n_mtp - 1)

        # Thinker state: prefill the prompt.
        with clock.part("thinker"):
            batch = self._prompt(text, audio, tts=reply_text is not None)
            hidden, logits, cache = m.thinker(m.embed_inputs(batch), None, use_cache=True, logits_to_keep=1)
        text_ids: list[int] = []
        conds: list[torch.Tensor] = []  # (1, 1, D) per reply token
        text_done = False

        def next_text_token() -> None:
            nonlocal logits, cache, text_done
            with clock.part("thinker"):
                i = len(text_ids)
                if forced is not None:
                    tok = forced[i] if i < len(forced) else eos
                else:
                    tok = int(text_sample(logits[0, -1]))
                if tok == eos or i >= g.max_text_tokens:
                    text_done = True
                    return
                ids = torch.tensor([[tok]], device=self.cfg.device)
                emb = m.thinker.embed(ids)
                h, logits, cache = m.thinker(emb, None, cache=cache, use_cache=True)
                conds.append(m.fusion(h, emb))  # this token's condition: its hidden state + embedding
                text_ids.append(tok)
            if not rep.thinker_first_chunk_s and (len(text_ids) >= tc.chunk_text or text_done):
                rep.thinker_first_chunk_s = clock.now()

        def ensure_text(n_needed: int) -> None:
            while not text_done and len(conds) < n_needed:
                next_text_token()
            if not rep.thinker_first_chunk_s and text_done:
                rep.thinker_first_chunk_s = clock.now()

        if not g.streaming:
            ensure_text(1 << 30)
        # Talker state.
        tcache = m.talker.new_cache()
        codes_in = torch.full((1, 1, tc.n_codebooks), sp.start, device=self.cfg.device)
        delayed: list[torch.Tensor] = []  # (K,) per delayed frame
        end_frame: int | None = None  # undelayed frame count once an end token appeared
        emitted = 0
        lead = tc.delays.index(min(tc.delays))  # the track whose end token ends the reply
        while True:
            # How many undelayed frames are final, and is the reply over?
            avail = max(0, len(delayed) - maxd)
            limit = end_frame if end_frame is not None else max_frames
            done = avail >= limit
            avail = min(avail, limit)
            while avail - emitted >= tc.chunk_frames or (done and avail > emitted):
                b = min(emitted + tc.chunk_frames, avail)
                with clock.part("codec"):
                    frames = undelay(torch.stack(delayed)[None], tc.delays)[0, :b]  # (b, K)
                    codes = to_codec_codes(frames, sp).cpu().numpy()
                    wav = self.decoder(codes, emitted, b)
                if not rep.chunks:
                    rep.first_chunk_latency_s = clock.now()
                    rep.first_chunk_breakdown = {k: round(v, 6) for k, v in clock.parts.items()}
                chunk = Chunk(rep.chunks, wav, codes[emitted:b], emitted, clock.now())
                rep.chunks += 1
                emitted = b
                with clock.paused():
                    yield chunk
            if done:
                break
            # Text the next forward's newest frame may see (chunk-causal schedule).
            newest = tcache.pos + codes_in.shape[1] - 1 + tc.n_mtp
            ensure_text((newest // tc.chunk_frames + 1) * tc.chunk_text)
            with clock.part("talker"):
                if conds:
                    cond_text = torch.cat(conds, dim=1)  # (1, R, D)
                else:  # empty reply: the Talker still needs one memory slot
                    cond_text = m.talker.cond_pad.view(1, 1, -1).to(m.fusion.fc2.weight.dtype)
                n_text = torch.tensor([cond_text.shape[1]], device=self.cfg.device)
                new = m.talker.generate_step(tcache, codes_in, cond_text, self.cfg.fusion.upsample, cond_text,
                                             n_text, chunk_causal=g.streaming, sample=speech_sample)  # (1, N+1, K)
            for f in new[0]:
                if end_frame is None and not g.ignore_eos and int(f[lead]) == sp.end:
                    end_frame = len(delayed) - tc.delays[lead]
                delayed.append(f)
            codes_in = new
        ensure_text(0)
        rep.text_tokens = len(text_ids)
        rep.text = self.tokenizer.decode(text_ids)
        rep.talker_forwards = tcache.forwards
        rep.frames = emitted
        rep.thinker_s = clock.parts.get("thinker", 0.0)
        rep.talker_s = clock.parts.get("talker", 0.0)
        rep.codec_decode_s = clock.parts.get("codec", 0.0)
        rep.total_s = clock.now()
        rep.audio_s = emitted / self.codec.frame_rate
        rep.rtf = rep.total_s / rep.audio_s if rep.audio_s else float("inf")

    def generate(self, text: str | None = None, audio: np.ndarray | None = None, reply_text: str | None = None,
                 out_wav: str | None = None) -> tuple[np.ndarray, np.ndarray, LatencyReport]:
        """Run `stream` to the end: (waveform [S], codes [T, K], report); optionally write a WAV."""
        chunks = list(self.stream(text=text, audio=audio, reply_text=reply_text))
        wav = np.concatenate([c.waveform for c in chunks]) if chunks else np.zeros(0, np.float32)
        K = self.cfg.talker.n_codebooks
        codes = np.concatenate([c.codes for c in chunks]) if chunks else np.zeros((0, K), np.int64)
        if out_wav:
            import soundfile as sf

            sf.write(out_wav, wav, self.codec.sample_rate)
        return wav, codes, self.report


class _Clock:
    """Time per component, excluding time the consumer holds a yielded chunk.

    Wall time by default; "cpu" counts this process's CPU time, which on a machine shared with
    other jobs measures the work without the time spent waiting for a core.
    """

    def __init__(self, kind: str = "wall"):
        if kind not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {kind!r}")
        self.timer = time.perf_counter if kind == "wall" else time.process_time
        self.t0 = self.timer()
        self.pause = 0.0
        self.parts: dict[str, float] = {}

    def now(self) -> float:
        return self.timer() - self.t0 - self.pause

    def part(self, name: str):
        return _Timed(self, name)

    def paused(self):
        return _Paused(self)


class _Timed:
    def __init__(self, clock: _Clock, name: str):
        self.clock, self.name = clock, name

    def __enter__(self):
        self.t = self.clock.timer()

    def __exit__(self, *exc):
        self.clock.parts[self.name] = self.clock.parts.get(self.name, 0.0) + self.clock.timer() - self.t


class _Paused:
    def __init__(self, clock: _Clock):
        self.clock = clock

    def __enter__(self):
        self.t = self.clock.timer()

    def __exit__(self, *exc):
        self.clock.pause += self.clock.timer() - self.t


__all__ = ["Chunk", "ChunkDecoder", "GenerationConfig", "LatencyReport", "StreamingGenerator", "chunk_bounds"]
