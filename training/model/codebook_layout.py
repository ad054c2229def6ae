"""Small pure helpers for the Talker's multi-track code layout (moshi `lm_utils` style).

Each of the K tracks has `codebook_size` code ids plus three specials appended:
`pad` (delay filler and beyond the end), `start` (input before the first frame) and
`end` (target right after the last frame). Shape legend: B batch, T frames, K codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100  # target id the losses skip


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    start: int
    end: int

    @classmethod
    def for_codebook_size(cls, codebook_size: int) -> "SpecialTokens":
        return cls(pad=codebook_size, start=codebook_size + 1, end=codebook_size + 2)


def apply_delay(codes: torch.Tensor, delays: list[int], pad: int) -> torch.Tensor:
    """Shift track k right by `delays[k]` frames, filling with `pad`.

    Args:
        codes: [B, T, K] ids.
    Returns:
        [B, T + max(delays), K]; out[:, t + delays[k], k] = codes[:, t, k].
    """
    B, T, K = codes.shape
    D = max(delays) if delays else 0
    out = codes.new_full((B, T + D, K), pad)
    for k, d in enumerate(delays):
        out[:, d : d + T, k] = codes[:, :, k]
    return out


def undelay(codes: torch.Tensor, delays: list[int]) -> torch.Tensor:
    """Inverse of `apply_delay`.

    Args:
        codes: [B, T + D, K] delayed ids, D = max(delays).
    Returns:
        [B, T, K] aligned ids.
    """
    D = max(delays) if delays else 0
    T = codes.shape[1] - D
    return torch.stack([codes[:, d : d + T, k] for k, d in enumerate(delays)], dim=-1)


def build_targets(codes: torch.Tensor, n_frames: torch.Tensor, delays: list[int], sp: SpecialTokens) -> torch.Tensor:
    """Talker targets: frames, one `end` frame, delays applied, IGNORE beyond.

    Args:
        codes: [B, T, K] code ids (anything at t >= n_frames[b] is ignored).
        n_frames: [B] valid frames per row.
    Returns:
        [B, T + 1 + D, K] int64 targets; position t holds frame t of the delayed layout.
    """
    B, T, K = codes.shape
    t = torch.arange(T + 1, device=codes.device)[None, :]  # (1, T+1)
    valid = t < n_frames[:, None]  # (B, T+1)
    x = torch.cat([codes.long(), codes.new_zeros(B, 1, K).long()], dim=1)  # (B, T+1, K)
    x = torch.where(valid[..., None], x, torch.full_like(x, IGNORE))
    x = torch.where((t == n_frames[:, None])[..., None], torch.full_like(x, sp.end), x)
    delayed = apply_delay(x, delays, pad=sp.pad)  # delay heads are pad until the track starts
    # Past each track's end frame the row is over: ignore instead of pad.
    D = max(delays) if delays else 0
    tt = torch.arange(T + 1 + D, device=codes.device)[None, :, None]  # (1, T', 1)
    end_at = n_frames[:, None, None] + torch.tensor(delays, device=codes.device)[None, None, :]  # (B, 1, K)
    return torch.where(tt > end_at, torch.full_like(delayed, IGNORE), delayed)


def shift_inputs(targets: torch.Tensor, sp: SpecialTokens) -> torch.Tensor:
    """Teacher-forcing inputs: position t sees frame t-1; position 0 sees `start`.

    Args:
        targets: [B, T', K] from `build_targets` (IGNORE allowed).
    Returns:
        [B, T', K] input ids, IGNORE replaced by `pad`.
    """
    B, _, K = targets.shape
    start = targets.new_full((B, 1, K), sp.start)
    x = torch.cat([start, targets[:, :-1]], dim=1)
    return x.masked_fill(x == IGNORE, sp.pad)


def chunk_text_visible(n_frames: int, chunk_frames: int, chunk_text: int, offset: int = 0) -> torch.Tensor:
    """Text positions each frame may see under the chunk-causal rule.

    Frame t (in chunk k = t // chunk_frames) sees the first (k + 1) * chunk_text text positions.

    Args:
        n_frames: T'.
        offset: frame index of position 0 (MTP module i predicts frame t + i).
    Returns:
        [T'] int64 counts.
    """
    t = torch.arange(n_frames) + offset
    return (t // chunk_frames + 1) * chunk_text


def to_codec_codes(frames: torch.Tensor, sp: SpecialTokens) -> torch.Tensor:
    """Make generated frames safe for the codec: any special id becomes code 0.

    Args:
        frames: [T, K] ids (after `undelay`).
    Returns:
        [T, K] ids in [0, codebook_size).
    """
    return frames.masked_fill(frames >= sp.pad, 0)


def chunk_bounds(n_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[(start, end)) frame ranges of consecutive streaming chunks; the last may be short."""
    return [(a, min(a + chunk_frames, n_frames)) for a in range(0, n_frames, chunk_frames)]
