"""Mimi (Kyutai) through `transformers.MimiModel`: 24 kHz in, 12.5 Hz, first K of its codebooks.

`MimiCodec.tiny()` builds a tiny random-init model of the *same class* for tests and the
demo. A freshly initialised Mimi has all-zero codebooks and emits only code 0, so the tiny
build calibrates each codebook once on a fixed signal: entries are drawn with the spread of
the residual that reaches that quantizer, which spreads codes over the whole codebook.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import MimiConfig, MimiModel

from tokenization.codec import CodecInfo, SpeechCodec

def tiny_mimi_config(n_codebooks: int = 8) -> MimiConfig:
    """Real Mimi geometry (24 kHz, 12.5 Hz, 2048-entry codebooks), tiny widths."""
    return MimiConfig(
        hidden_size=64,
        num_filters=8,
        num_residual_layers=1,
        num_hidden_layers=1,
        intermediate_size=128,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        codebook_dim=32,
        vector_quantization_hidden_dimension=32,
        num_quantizers=n_codebooks,
        codebook_size=2048,
        upsample_groups=64,
    )


def _calibration_signal(sample_rate: int, seconds: float = 8.0) -> torch.Tensor:
    """A fixed mix of chirps and noise bursts, so calibration needs no data file."""
    g = torch.Generator().manual_seed(1234)
    t = torch.arange(int(sample_rate * seconds)) / sample_rate
    chirp = torch.sin(2 * torch.pi * (80 + 600 * t) * t)
    am = 0.5 * (1 + torch.sin(2 * torch.pi * 3 * t))
    noise = torch.randn(t.shape, generator=g) * (torch.rand(t.shape, generator=g) > 0.7)
    return (0.3 * chirp * am + 0.05 * noise)[None, None, :]  # [1, 1, S]


@torch.no_grad()
def _calibrate_codebooks(model: MimiModel, generator: torch.Generator) -> None:
    """Fill every codebook with random entries scaled to the residual it quantizes."""
    latents = model.encoder(_calibration_signal(model.config.sampling_rate)).latents  # [1, C, T]
    quantizer = model.quantizer
    for rvq in (quantizer.semantic_residual_vector_quantizer, quantizer.acoustic_residual_vector_quantizer):
        residual = rvq.input_proj(latents) if rvq.input_proj is not None else latents  # [1, D, T]
        for layer in rvq.layers:
            book = layer.codebook
            std = residual.std().clamp(min=1e-3)
            entries = torch.randn(book.embed_sum.shape, generator=generator) * std * 0.5
            book.embed_sum.copy_(entries)
            book.cluster_usage.fill_(1.0)
            book._embed = None  # drop the cached (all-zero) embedding
            residual = residual - layer.decode(layer.encode(residual))


class MimiCodec(SpeechCodec):
    """`SpeechCodec` over `transformers.MimiModel`, keeping its first `n_codebooks` quantizers."""

    def __init__(self, model: MimiModel, checkpoint_id: str, n_codebooks: int = 8, device: str = "cpu"):
        if n_codebooks > model.config.num_quantizers:
            raise ValueError(f"Mimi has {model.config.num_quantizers} quantizers, asked for {n_codebooks}")
        self.model = model.to(device).eval()
        self.device = device
        cfg = model.config
        self.info = CodecInfo(
            name="mimi",
            version=f"transformers-{transformers.__version__}",
            checkpoint_id=checkpoint_id,
            sample_rate=int(cfg.sampling_rate),
            frame_rate=float(cfg.frame_rate),
            n_codebooks=n_codebooks,
            codebook_size=int(cfg.codebook_size),
        )

    @classmethod
    def tiny(cls, n_codebooks: int = 8, device: str = "cpu", seed: int = 0) -> "MimiCodec":
        """Tiny random-init Mimi, identical in every process for a given seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MimiModel(tiny_mimi_config(n_codebooks)).eval()
            _calibrate_codebooks(model, torch.Generator().manual_seed(seed + 1))
        return cls(model, checkpoint_id=f"tiny-random-seed{seed}", n_codebooks=n_codebooks, device=device)

    @classmethod
    def from_pretrained(cls, path: str | Path, n_codebooks: int = 8, device: str = "cpu") -> "MimiCodec":
        """Load a local Mimi checkpoint folder (config.json + weights); never downloads."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"--codec {path}: not a local Mimi checkpoint folder (no config.json); "
                "pass 'tiny' or a folder saved with MimiModel.save_pretrained"
            )
        model = MimiModel.from_pretrained(str(path), local_files_only=True)
        config_sha = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        return cls(model, checkpoint_id=f"{path.name}@{config_sha}", n_codebooks=n_codebooks, device=device)

    @torch.no_grad()
    def encode(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Each clip in its own forward, zero-padded to whole frames: its codes never depend on the clips
        beside it. In a padded batch the same clip met other matrix shapes (batch size, the longest
        clip's length), whose float results may differ in the last bits and flip a near-tie code (issue
        27); on CPU one clip per call costs no more than a padded batch (no padding computed)."""
        out = []
        for wave in waveforms:
            n = len(wave)
            batch = torch.zeros(1, 1, self.n_frames(n) * self.samples_per_frame)  # [1, 1, S]
            batch[0, 0, :n] = torch.from_numpy(np.array(wave, dtype=np.float32))
            codes = self.model.encode(batch.to(self.device), num_quantizers=self.n_codebooks).audio_codes  # [1, K, T]
            out.append(np.ascontiguousarray(codes[0].T.cpu().numpy().astype(np.uint16)[: self.n_frames(n)]))  # [T, K]
        return out

    @torch.no_grad()
    def decode(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for c in codes:  # one at a time: decoded lengths differ and decode is cheap next to encode
            t = torch.as_tensor(np.asarray(c, dtype=np.int64)).T[None].to(self.device)  # [1, K, T]
            audio = self.model.decode(t).audio_values[0, 0]
            out.append(audio.float().cpu().numpy()[: len(c) * self.samples_per_frame])
        return out
