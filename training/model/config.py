"""Config dataclasses for VocalNet-M2: every size lives here, presets pick them.

Sizes (widths, depths, heads, vocabularies, position tables, LoRA rank, MTP modules) have no
defaults and are keyword-only: they come from a preset or a checkpoint's `config.json`, never
from a dataclass default. Knobs (dropout, prompt strings, dtypes, ratios) keep defaults.
`VocalNetConfig.tiny()` builds random-init tiny versions of the real classes (CPU tests);
`VocalNetConfig.paper(whisper_path, qwen_path)` points at local Whisper-large-v3 and
Qwen3-8B checkpoints. `to_dict`/`from_dict` round-trip through JSON; a stage YAML's `model:`
section goes through `from_section` (a named preset is required, so no size ever falls back
to a dataclass default silently).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from tokenization.audio import WHISPER_SAMPLE_RATE
from tokenization.schema import CODEBOOK_SIZE, N_CODEBOOKS
from tokenization.strict_config import ConfigError, config_error, load_dataclass


EXPORT_FORMAT = "vocalnet-m2/1"  # the `format` of an exported model's config.json and safetensors


@dataclass(kw_only=True)
class AudioEncoderConfig:
    """Frozen Whisper encoder. `path` set: load a local checkpoint (its `config.json` sets the sizes); else random-init."""

    path: str | None = None
    n_mels: int
    d_model: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    max_source_positions: int  # encoder frames (50 Hz) -> mel frames = 2x
    sampling_rate: int = WHISPER_SAMPLE_RATE
    hop_length: int = 160
    dtype: str = "float32"  # the frozen encoder's weights: float32 | bfloat16

    @property
    def n_mel_frames(self) -> int:
        """Mel frames Whisper requires per input (fixed: shorter audio is padded)."""
        return 2 * self.max_source_positions

    @property
    def max_samples(self) -> int:
        return self.n_mel_frames * self.hop_length


@dataclass(kw_only=True)
class AdaptorConfig:
    """Concatenate `k` consecutive encoder frames, then a 2-layer MLP into the LLM width."""

    k: int = 4  # 50 Hz encoder frames -> 12.5 Hz
    hidden: int


@dataclass(kw_only=True)
class ThinkerConfig:
    """Qwen3 LLM with LoRA. `path` set: local checkpoint (its `config.json` sets the sizes); else random-init."""

    path: str | None = None
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int  # must cover the tokenizer
    lora_rank: int
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # Prompt layout as plain text, so any tokenizer works (Qwen3 has these as single tokens).
    user_prefix: str = "<|im_start|>user\n"
    assistant_prefix: str = "<|im_end|>\n<|im_start|>assistant\n"
    eos_token: str = "<|endoftext|>"  # ends the reply; Qwen3 chat: "<|im_end|>"
    max_text_len: int = 512


@dataclass(kw_only=True)
class FusionConfig:
    """2 linear layers over [Thinker last hidden ; text embedding], then upsampling to frames."""

    hidden: int
    upsample: int = 3  # text positions -> speech frames


@dataclass(kw_only=True)
class TalkerConfig:
    """Multi-track AR Talker over K codebooks, plus N chained MTP modules."""

    n_codebooks: int = N_CODEBOOKS  # the codec's geometry (tokenization.schema), not a model size
    codebook_size: int = CODEBOOK_SIZE
    n_layers: int
    d_model: int
    n_heads: int
    ffn_mult: int = 4
    max_frames: int  # learned positions; longest reply in frames (+ delays + end)
    delays: list[int] = field(default_factory=lambda: [0] * N_CODEBOOKS)  # per codebook; all 0 = parallel
    n_mtp: int  # 0..5; paper: 4
    mtp_weights: list[float] | None = None  # explicit per-module weights, else mtp_decay**i
    mtp_decay: float = 0.8
    chunk_frames: int = 15  # streaming chunk: 15 frames = 1.2 s at 12.5 Hz
    chunk_text: int = 5  # text positions per chunk (= chunk_frames / upsample)
    chunk_causal_prob: float = 0.5  # share of training batches with the chunk-causal mask
    dropout: float = 0.0

    def mtp_weight(self, i: int) -> float:
        """Loss weight of MTP module i (1-based)."""
        if self.mtp_weights is not None:
            return float(self.mtp_weights[i - 1])
        return float(self.mtp_decay**i)

    @property
    def vocab(self) -> int:
        """Codes plus the per-track specials pad/start/end (see `codebook_layout`)."""
        return self.codebook_size + 3


@dataclass(kw_only=True)
class VocalNetConfig:
    audio: AudioEncoderConfig
    adaptor: AdaptorConfig
    thinker: ThinkerConfig
    fusion: FusionConfig
    talker: TalkerConfig
    device: str = "cpu"
    dtype: str = "float32"  # trainable weights: float32 (CPU) | bfloat16 (GPU)

    @classmethod
    def tiny(cls, n_mtp: int = 0, **talker_overrides: Any) -> "VocalNetConfig":
        """Random-init tiny sizes of the real classes, for CPU tests (the encoder takes 2 s of audio)."""
        return cls(
            audio=AudioEncoderConfig(n_mels=80, d_model=64, n_layers=2, n_heads=4, ffn_dim=128, max_source_positions=100),
            adaptor=AdaptorConfig(hidden=128),
            thinker=ThinkerConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128, vocab_size=51_865,
                                  lora_rank=8),
            fusion=FusionConfig(hidden=128),
            talker=TalkerConfig(**{"n_layers": 2, "d_model": 64, "n_heads": 4, "max_frames": 512, "n_mtp": n_mtp,
                                   **talker_overrides}),
        )

    @classmethod
    def paper(cls, whisper_path: str | None = None, qwen_path: str | None = None, n_mtp: int = 4) -> "VocalNetConfig":
        """Whisper-large-v3 + Qwen3-8B (published sizes; local checkpoints' `config.json` wins, see
        `read_checkpoint_sizes`); Talker sizes as a ~0.5B AR LM."""
        return cls(
            audio=AudioEncoderConfig(path=whisper_path, n_mels=128, d_model=1280, n_layers=32, n_heads=20, ffn_dim=5120,
                                     max_source_positions=1500, dtype="bfloat16"),
            adaptor=AdaptorConfig(k=4, hidden=4096),
            thinker=ThinkerConfig(
                path=qwen_path, d_model=4096, n_layers=36, n_heads=32, n_kv_heads=8, head_dim=128, ffn_dim=12288,
                vocab_size=151_936, lora_rank=32, lora_alpha=64, lora_dropout=0.05,
                lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                eos_token="<|im_end|>", max_text_len=2048,
            ),
            fusion=FusionConfig(hidden=4096, upsample=3),
            talker=TalkerConfig(n_layers=12, d_model=1024, n_heads=16, max_frames=3000, n_mtp=n_mtp),
            device="cuda",
            dtype="bfloat16",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_export(cls, d: dict[str, Any], where: str) -> "VocalNetConfig":
        """From an export's `config.json` (`VocalNetM2.save_pretrained`): its `format` checked, then strictly."""
        d = dict(d)
        fmt = d.pop("format", None)
        if fmt != EXPORT_FORMAT:
            raise ConfigError(f"{where}: format {fmt!r}: not a {EXPORT_FORMAT} checkpoint (VocalNetM2.save_pretrained writes it)")
        return cls.from_dict(d, where=where)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "", prefix: str = "") -> "VocalNetConfig":
        """Strictly from a nested dict (a checkpoint's `config.json`): unknown, mistyped or missing
        size keys name themselves and `where`; missing knobs keep their defaults. YAML goes through
        `from_section`."""
        return load_dataclass(cls, d, where=where, prefix=prefix)

    @classmethod
    def from_section(cls, section: dict[str, Any], where: str = "", prefix: str = "model") -> tuple["VocalNetConfig", list[str]]:
        """From a stage YAML's `model:` section: `preset: tiny|paper` plus nested overrides.

        Sizes never come from the dataclass defaults: `preset` is required, and where
        `audio.path` / `thinker.path` name local checkpoints their `config.json` sets the
        encoder's / LLM's sizes. Returns (config, notes on where sizes came from).
        """
        if not isinstance(section, dict):
            raise config_error(where, prefix, f"expected a mapping with `preset: {' | '.join(PRESETS)}`, got {section!r}")
        section = dict(section)
        preset = section.pop("preset", None)
        if preset not in PRESETS:
            problem = "missing" if preset is None else f"unknown preset {preset!r}"
            raise config_error(where, f"{prefix}.preset", f"{problem}: every size comes from a preset ({' | '.join(PRESETS)}) "
                                                          "or a checkpoint's config.json")
        base = getattr(cls, preset)().to_dict()
        for key, value in section.items():  # nested overrides on top of the preset
            base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        cfg = cls.from_dict(base, where, prefix)
        notes = read_checkpoint_sizes(cfg, where, prefix)
        return cfg, notes


PRESETS = ("tiny", "paper")

# config.json key of the local checkpoint -> our field, per part
_WHISPER_SIZES = {"num_mel_bins": "n_mels", "d_model": "d_model", "encoder_layers": "n_layers",
                  "encoder_attention_heads": "n_heads", "encoder_ffn_dim": "ffn_dim", "max_source_positions": "max_source_positions"}
_QWEN_SIZES = {"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
               "num_key_value_heads": "n_kv_heads", "head_dim": "head_dim", "intermediate_size": "ffn_dim", "vocab_size": "vocab_size"}


def read_checkpoint_sizes(cfg: VocalNetConfig, where: str = "", prefix: str = "model") -> list[str]:
    """Copy the encoder's and the LLM's sizes from their local checkpoints' `config.json`, in place.

    A path that is not here (it may exist only on the cluster) keeps the preset's sizes and
    says so in the returned notes; a `config.json` without a size key is an error naming it.
    """
    notes = []
    for part, sizes in (("audio", _WHISPER_SIZES), ("thinker", _QWEN_SIZES)):
        sub = getattr(cfg, part)
        if not sub.path:
            continue
        path = os.path.join(sub.path, "config.json")
        if not os.path.isfile(path):
            notes.append(f"{prefix}.{part}.path: {path} not found here: {part} sizes from the preset")
            continue
        with open(path) as f:
            found = json.load(f)
        for theirs, ours in sizes.items():
            if theirs not in found:
                raise config_error(path, theirs, f"missing (needed for {prefix}.{part}.{ours}, named by {where or 'the config'})")
            setattr(sub, ours, int(found[theirs]))
        notes.append(f"{prefix}.{part}: sizes from {path}")
    return notes


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
