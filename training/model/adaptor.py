"""Adaptor: downsample Whisper states by concatenating k frames, then a 2-layer MLP."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.model.config import AdaptorConfig


class Adaptor(nn.Module):
    def __init__(self, cfg: AdaptorConfig, d_in: int, d_out: int):
        super().__init__()
        self.k = cfg.k
        self.fc1 = nn.Linear(cfg.k * d_in, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: [B, S, d_in] encoder states; a trailing S % k frames are dropped.
        Returns:
            [B, S // k, d_out] speech embeddings in the LLM's space.
        """
        B, S, D = x.shape
        S = S - S % self.k
        x = x[:, :S].reshape(B, S // self.k, self.k * D)  # concat k consecutive frames
        return self.fc2(F.gelu(self.fc1(x)))


def n_adapted_frames(n_encoder_frames: int, k: int) -> int:
    """Speech positions the adaptor yields from `n_encoder_frames` valid frames (>= 1)."""
    return max(1, n_encoder_frames // k)
