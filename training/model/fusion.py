"""Fusion: what the Talker hears from the Thinker.

Two linear layers over [Thinker last hidden ; embedding of the same text token] give one
condition vector per text position; `upsample` repeats each `factor` times to the
speech-frame rate (3x: ~4 text tokens/s -> 12.5 frames/s).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.model.config import FusionConfig


class Fusion(nn.Module):
    def __init__(self, cfg: FusionConfig, d_thinker: int, d_talker: int):
        super().__init__()
        self.factor = cfg.upsample
        self.fc1 = nn.Linear(2 * d_thinker, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, d_talker)

    def forward(self, hidden: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """
        Args:
            hidden: [B, R, H] Thinker last hidden state at the reply tokens.
            text_emb: [B, R, H] embeddings of those tokens.
        Returns:
            [B, R, D] condition per text position (Talker width D).
        """
        x = torch.cat([hidden, text_emb.to(hidden.dtype)], dim=-1)  # (B, R, 2H)
        return self.fc2(F.silu(self.fc1(x)))

    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        """[B, R, D] -> [B, R * factor, D]: frame t gets text position t // factor."""
        return cond.repeat_interleave(self.factor, dim=1)
