"""The frozen Whisper encoder (transformers `WhisperEncoder`).

Whisper takes a fixed window of log-mel frames (`2 * max_source_positions`), so shorter
audio is zero-padded by the feature extractor and `n_valid_frames` says how many encoder
frames carry speech.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from training.model.config import AudioEncoderConfig, torch_dtype


def build_whisper_encoder(cfg: AudioEncoderConfig) -> WhisperEncoder:
    """Local checkpoint (never downloads) or a random-init tiny encoder of the real class."""
    if cfg.path:
        whisper = WhisperModel.from_pretrained(cfg.path, local_files_only=True, dtype=torch_dtype(cfg.dtype))
        return whisper.get_encoder()
    wcfg = WhisperConfig(
        num_mel_bins=cfg.n_mels, d_model=cfg.d_model, encoder_layers=cfg.n_layers,
        encoder_attention_heads=cfg.n_heads, encoder_ffn_dim=cfg.ffn_dim,
        decoder_layers=1, decoder_attention_heads=cfg.n_heads, decoder_ffn_dim=cfg.ffn_dim,
        max_source_positions=cfg.max_source_positions, max_target_positions=64,
    )
    return WhisperEncoder(wcfg).to(torch_dtype(cfg.dtype))


def build_feature_extractor(cfg: AudioEncoderConfig) -> WhisperFeatureExtractor:
    """Log-mel front end matching the encoder window; built offline from explicit args."""
    fe = WhisperFeatureExtractor(
        feature_size=cfg.n_mels, sampling_rate=cfg.sampling_rate, hop_length=cfg.hop_length,
        chunk_length=max(1, math.ceil(cfg.max_samples / cfg.sampling_rate)), return_attention_mask=True,
    )
    # chunk_length is whole seconds; the encoder window may not be: pin the exact size.
    fe.n_samples = cfg.max_samples
    fe.nb_max_frames = cfg.n_mel_frames
    return fe


class AudioEncoder(nn.Module):
    """Whisper encoder, frozen and kept in eval mode whatever the stage."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.whisper = build_whisper_encoder(cfg)
        self.whisper.requires_grad_(False)
        self.d_model = self.whisper.config.d_model

    def train(self, mode: bool = True) -> "AudioEncoder":
        return super().train(False)  # frozen: no dropout, ever

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input_features: [B, n_mels, 2 * max_source_positions] log-mel.
        Returns:
            [B, max_source_positions, d_whisper] encoder states (50 Hz).
        """
        with torch.no_grad():
            dtype = next(self.whisper.parameters()).dtype
            return self.whisper(input_features.to(dtype)).last_hidden_state


def n_encoder_frames(n_mel_frames: torch.Tensor) -> torch.Tensor:
    """Whisper's two convs (stride 1 then 2) map mel frames to ceil(n / 2) encoder frames."""
    return (n_mel_frames + 1) // 2
