"""Talker: a multi-track autoregressive transformer over K codebooks, plus N chained MTP modules.

Step t's input is the sum of K codebook embeddings of frame t-1 (one table per codebook),
the upsampled Fusion condition for frame t and a learned position; one head per codebook
predicts frame t. Each block also cross-attends to the Fusion condition of the reply text
(the "text memory"), which is where the chunk-causal streaming mask lives: frame t in
chunk k = t // chunk_frames sees the first (k + 1) * chunk_text text positions.

MTP (DeepSeek-V3 / VocalNet): module i (1..N) takes module i-1's hidden state at position t
and the embedding of frame t+i-1, mixes them with a linear layer, runs one block + norm and
predicts frame t+i with its own heads. One forward therefore yields N+1 frames. At
inference every module processes the same N+1 new positions as the backbone (their inputs
are all known by the time the module runs), so each keeps an exact KV cache.

Inference cost follows the weights: the text memory only grows, so each layer (backbone and
modules) projects a text position's cross-attention K/V once and caches it; frames are
embedded once per forward and shared by the modules; the K heads of a depth are one matmul
over a [K, V, D] weight (one embedding table [K, V, D] likewise); at CPU fp32 inference the
linears run on oneDNN-packed weights (`cpu_linear.pack_linears`), so the 5 positions of an MTP
forward cost about what one position does.

Shape legend: B batch, T frames (positions), K codebooks, V codes+specials, R text
positions, D width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from training.model.codebook_layout import IGNORE, SpecialTokens, chunk_text_visible, shift_inputs
from training.model.config import TalkerConfig
from training.model.cpu_linear import PackedWeight, linear, linear_gelu


def _cat(past: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if past is None else torch.cat([past, new], dim=2)


class LayerCache:
    """One layer's keys/values: self-attention appended step by step, and the text memory's
    cross-attention K/V, projected once per text position (the text only grows by appending).

    Self-attention K/V live in buffers that double when full, so appending a step copies only
    the new positions (a `torch.cat` per step would copy the whole past: quadratic in the reply).
    """

    def __init__(self):
        self._k: torch.Tensor | None = None  # (B, H, capacity, hd)
        self._v: torch.Tensor | None = None
        self.length = 0
        self.mk: torch.Tensor | None = None  # (B, H, R_seen, hd)
        self.mv: torch.Tensor | None = None

    @property
    def k(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self.length]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: [B, H, n, hd] -> all keys/values so far [B, H, length, hd]."""
        end = self.length + k.shape[2]
        if self._k is None or end > self._k.shape[2]:
            cap = max(end, 2 * (0 if self._k is None else self._k.shape[2]), 64)
            grown_k, grown_v = k.new_empty(*k.shape[:2], cap, k.shape[3]), v.new_empty(*v.shape[:2], cap, v.shape[3])
            if self.length:
                grown_k[:, :, : self.length], grown_v[:, :, : self.length] = self.k, self.v
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self.length : end], self._v[:, :, self.length : end] = k, v
        self.length = end
        return self.k, self.v

    def memory_kv(self, project: Callable, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V of `memory` [B, R, D]: rows past those already seen go through `project`, once.

        The caller's memory must extend the one of the previous call (same rows, new ones appended).
        """
        seen = 0 if self.mk is None else self.mk.shape[2]
        if memory.shape[1] < seen:
            raise ValueError(f"text memory shrank from {seen} to {memory.shape[1]} positions: start a new cache")
        if memory.shape[1] > seen:
            k, v = project(memory[:, seen:])
            self.mk, self.mv = _cat(self.mk, k), _cat(self.mv, v)
        return self.mk, self.mv


class Attention(nn.Module):
    """Multi-head attention; `kv` given: cross-attention, else causal self-attention."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.h = n_heads
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.h, D // self.h).transpose(1, 2)  # (B, H, T, hd)

    def _project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, n, D] -> keys, values [B, H, n, hd]."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x, mask, kv=None, cache: LayerCache | None = None):
        """
        Args:
            x: [B, n, D] queries. kv: [B, R, D] memory for cross-attention.
            mask: bool, broadcastable to [B, 1, n, keys]; True = may attend.
            cache: self-attention: append the new K/V; cross-attention: reuse the memory's K/V.
        Returns:
            [B, n, D].
        """
        q = self._heads(self.q(x))
        if kv is None:
            k, v = self._project_kv(x)
            if cache is not None:
                k, v = cache.append(k, v)
        else:
            k, v = self._project_kv(kv) if cache is None else cache.memory_kv(self._project_kv, kv)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        B, H, n, hd = y.shape
        return self.o(y.transpose(1, 2).reshape(B, n, H * hd))


class Block(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the text memory, MLP."""

    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.n_heads, cfg.dropout)
        self.cross_attn = Attention(d, cfg.n_heads, cfg.dropout)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.ffn_mult * d), nn.GELU(), nn.Linear(cfg.ffn_mult * d, d))

    def forward(self, x, memory, self_mask, cross_mask, cache: LayerCache | None = None):
        """x: [B, n, D]; memory: [B, R, D]; self_mask: [n, T_past + n]; cross_mask: [B, 1, n, R]."""
        x = x + self.self_attn(self.ln1(x), self_mask, cache=cache)
        x = x + self.cross_attn(self.ln2(x), cross_mask, kv=memory, cache=cache)
        up, _, down = self.mlp  # Linear, GELU, Linear: the GELU fused into `up` where it can be
        return x + down(linear_gelu(up, self.ln3(x)))


class PerCodebookWeight(nn.Module):
    """A [K, V, D] weight, one [V, D] slice per codebook track, kept as one tensor so the K
    tracks cost one matmul or lookup. Checkpoints from before held one `{prefix}{k}.weight`
    per codebook (an `nn.ModuleList`); they are stacked on load, so old state dicts still load."""

    def __init__(self, n_codebooks: int, vocab: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_codebooks, vocab, d).normal_(std=0.02))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = [f"{prefix}{k}.weight" for k in range(self.weight.shape[0])]
        if f"{prefix}weight" not in state_dict and all(key in state_dict for key in old):
            state_dict[f"{prefix}weight"] = torch.stack([state_dict.pop(key) for key in old])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CodebookHeads(PerCodebookWeight, PackedWeight):
    """K linear heads (no bias) on the same hidden state, as one matmul."""

    def packed_weight(self) -> torch.Tensor:
        K, V, D = self.weight.shape
        return self.weight.view(K * V, D)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[B, n, D] -> [B, n, K, V]."""
        K, V, _ = self.weight.shape
        return linear(h, self.packed_weight(), packed=self.packed).unflatten(-1, (K, V))


class CodebookEmbedding(PerCodebookWeight):
    """Sum of one embedding per codebook track, as one lookup."""

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, n, K] ids -> [B, n, D]."""
        K, V, D = self.weight.shape
        offsets = torch.arange(K, device=codes.device) * V  # track k's rows start at k * V
        return F.embedding(codes + offsets, self.weight.view(K * V, D)).sum(dim=-2)


class MTPModule(nn.Module):
    """One multi-token-prediction depth: [norm(h_prev) ; norm(emb)] -> linear -> block -> norm -> K heads."""

    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        d = cfg.d_model
        self.norm_h, self.norm_e = nn.LayerNorm(d), nn.LayerNorm(d)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.block = Block(cfg)
        self.norm = nn.LayerNorm(d)
        self.heads = CodebookHeads(cfg.n_codebooks, cfg.vocab, d)

    def forward(self, h_prev, emb, memory, self_mask, cross_mask, cache=None):
        """h_prev, emb: [B, n, D] -> hidden [B, n, D] (logits via `logits`)."""
        x = self.proj(torch.cat([self.norm_h(h_prev), self.norm_e(emb)], dim=-1))
        return self.norm(self.block(x, memory, self_mask, cross_mask, cache))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """[B, n, D] -> [B, n, K, V]."""
        return self.heads(h)


def causal_mask(n: int, past: int, device) -> torch.Tensor:
    """[n, past + n] bool: new query i sees keys 0..past + i."""
    return torch.arange(past + n, device=device)[None, :] <= (torch.arange(n, device=device)[:, None] + past)


def cross_mask(visible: torch.Tensor, R: int) -> torch.Tensor:
    """[B, n] visible text counts -> [B, 1, n, R] bool mask."""
    return (torch.arange(R, device=visible.device)[None, None, :] < visible[:, :, None])[:, None]


@dataclass
class TalkerCache:
    """Per-layer caches of the backbone and of each MTP module, plus the next position."""

    backbone: list[LayerCache]
    mtp: list[LayerCache]
    pos: int = 0
    forwards: int = 0  # Talker forward passes so far (one = backbone + all MTP modules)


@dataclass
class TalkerOutput:
    hidden: torch.Tensor  # (B, T, D) backbone
    logits: list[torch.Tensor] = field(default_factory=list)  # [main, mtp1..mtpN], each (B, T, K, V)


class Talker(nn.Module):
    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        assert len(cfg.delays) == cfg.n_codebooks, "one delay per codebook"
        self.cfg = cfg
        self.sp = SpecialTokens.for_codebook_size(cfg.codebook_size)
        d = cfg.d_model
        self.emb = CodebookEmbedding(cfg.n_codebooks, cfg.vocab, d)
        self.wpe = nn.Embedding(cfg.max_frames, d)
        self.cond_pad = nn.Parameter(torch.zeros(d))  # condition for frames past the text
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.heads = CodebookHeads(cfg.n_codebooks, cfg.vocab, d)
        self.mtp = nn.ModuleList(MTPModule(cfg) for _ in range(cfg.n_mtp))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # --- shared pieces -------------------------------------------------------------------
    def embed_frames(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, n, K] ids -> [B, n, D]: sum of one embedding per codebook track."""
        return self.emb(codes)

    def frame_conditions(self, cond_text: torch.Tensor, factor: int, n: int, start: int = 0) -> torch.Tensor:
        """Upsampled per-frame condition for frames start..start+n-1 (pad past the text).

        Args:
            cond_text: [B, R, D] Fusion output per text position.
        Returns:
            [B, n, D]; frame t gets cond_text[t // factor], or `cond_pad` if t // factor >= R.
        """
        B, R, D = cond_text.shape
        idx = torch.arange(start, start + n, device=cond_text.device) // factor  # (n,)
        inside = idx < R
        out = cond_text[:, idx.clamp(max=R - 1)]  # (B, n, D)
        return torch.where(inside[None, :, None], out, self.cond_pad.to(out.dtype))

    def visible_text(self, n: int, n_text: torch.Tensor, chunk_causal: bool, start: int = 0) -> torch.Tensor:
        """[B, n] text positions each frame start..start+n-1 may attend to (>= 1)."""
        if chunk_causal:
            vis = chunk_text_visible(n, self.cfg.chunk_frames, self.cfg.chunk_text, start).to(n_text.device)
            vis = torch.minimum(vis[None, :], n_text[:, None])
        else:
            vis = n_text[:, None].expand(-1, n)
        return vis.clamp(min=1)

    def _backbone(self, emb, cond, memory, visible, cache: TalkerCache | None, pos: int):
        """emb, cond: [B, n, D] input frames' embeddings and conditions -> [B, n, D]."""
        n = emb.shape[1]
        past = cache.backbone[0].length if cache is not None else 0
        x = emb + cond + self.wpe(torch.arange(pos, pos + n, device=emb.device))
        sm, cm = causal_mask(n, past, x.device), cross_mask(visible, memory.shape[1])
        for j, block in enumerate(self.blocks):
            x = block(x, memory, sm, cm, cache.backbone[j] if cache is not None else None)
        return self.ln_f(x)  # (B, n, D)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Backbone heads: [B, n, D] -> [B, n, K, V]."""
        return self.heads(h)

    # --- training / teacher forcing ------------------------------------------------------
    def forward(self, targets, cond_text, factor, memory, n_text, chunk_causal: bool = False) -> TalkerOutput:
        """Teacher-forced logits of the backbone and every MTP module.

        Args:
            targets: [B, T, K] delayed target frames (IGNORE past the end), from `build_targets`.
            cond_text: [B, R, D] Fusion output per text position; also the text memory.
            factor: text -> frame upsampling.
            memory: [B, R, D] text memory (cond_text, padded rows masked via n_text).
            n_text: [B] valid text positions per row.
        Returns:
            TalkerOutput; logits[i] at position t predicts frame t + i.
        """
        B, T, K = targets.shape
        N = len(self.mtp)
        cond = self.frame_conditions(cond_text, factor, T + N)  # (B, T+N, D)
        vis = self.visible_text(T + N, n_text, chunk_causal)  # (B, T+N)
        h = self._backbone(self.embed_frames(shift_inputs(targets, self.sp)), cond[:, :T], memory, vis[:, :T], None, 0)
        out = TalkerOutput(hidden=h, logits=[self.logits(h)])
        if not N:
            return out
        # Frames as MTP inputs: frame t+i-1 for position t (pad past the end), embedded once.
        frames = targets.masked_fill(targets == IGNORE, self.sp.pad)
        frames = torch.cat([frames, frames.new_full((B, N, K), self.sp.pad)], dim=1)  # (B, T+N, K)
        frame_emb = self.embed_frames(frames)  # (B, T+N, D)
        sm = causal_mask(T, 0, h.device)
        for i, module in enumerate(self.mtp, start=1):
            emb = frame_emb[:, i - 1 : i - 1 + T] + cond[:, i : i + T]
            h = module(h, emb, memory, sm, cross_mask(vis[:, i : i + T], memory.shape[1]))
            out.logits.append(module.logits(h))
        return out

    def losses(self, out: TalkerOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-codebook CE of the backbone, per-module MTP CE and their weighted total.

        Args:
            targets: [B, T, K] with IGNORE where no loss applies.
        Returns:
            {"loss/speech": main + sum_i w_i * mtp_i, "loss/cb{k}", "loss/mtp{i}"}.
        """
        K, V = self.cfg.n_codebooks, self.cfg.vocab
        res: dict[str, torch.Tensor] = {}
        per_cb = []
        for k in range(K):
            per_cb.append(F.cross_entropy(out.logits[0][..., k, :].reshape(-1, V).float(),
                                          targets[..., k].reshape(-1), ignore_index=IGNORE))
            res[f"loss/cb{k}"] = per_cb[-1]
        total = torch.stack(per_cb).mean()
        for i, logits in enumerate(out.logits[1:], start=1):
            # Module i at position t predicts frame t + i: shift targets left by i.
            tgt = torch.cat([targets[:, i:], targets.new_full((targets.shape[0], i, K), IGNORE)], dim=1)
            if (tgt != IGNORE).any():
                li = F.cross_entropy(logits.reshape(-1, V).float(), tgt.reshape(-1), ignore_index=IGNORE)
            else:  # nothing that far ahead: a zero that still touches the graph
                li = logits.sum() * 0.0
            res[f"loss/mtp{i}"] = li
            total = total + self.cfg.mtp_weight(i) * li
        res["loss/speech"] = total
        return res

    # --- generation ------------------------------------------------------------------------
    def new_cache(self) -> TalkerCache:
        return TalkerCache(backbone=[LayerCache() for _ in self.blocks], mtp=[LayerCache() for _ in self.mtp])

    @torch.no_grad()
    def generate_step(self, cache: TalkerCache, codes_in, cond_text, factor, memory, n_text, chunk_causal, sample):
        """One Talker forward: the backbone and every MTP module on the n new positions.

        Args:
            codes_in: [B, n, K] frames pos-1 .. pos+n-2 (the previous forward's output, or `start`).
            cond_text, memory: [B, R, D] text seen so far; n_text: [B] its length. The memory may only
                grow by appending between calls on one cache: its K/V are cached per text position.
            sample: [B, K, V] logits -> [B, K] ids.
        Returns:
            [B, N+1, K] frames pos+n-1 .. pos+n-1+N (delayed layout).
        """
        n, N, pos = codes_in.shape[1], len(self.mtp), cache.pos
        cond = self.frame_conditions(cond_text, factor, n + N, start=pos)
        vis = self.visible_text(n + N, n_text, chunk_causal, start=pos)
        known = self.embed_frames(codes_in)  # (B, n, D): frames pos-1 .. pos+n-2, embedded once
        h = self._backbone(known, cond[:, :n], memory, vis[:, :n], cache, pos)
        frames = [sample(self.logits(h[:, -1:])[:, 0])]  # (B, K): only the newest position's heads
        if N:
            sm = causal_mask(n, cache.mtp[0].length, h.device)  # every module has seen the same positions
        for i, module in enumerate(self.mtp, start=1):
            # Module i's inputs are frames pos+i-1 .. pos+n-2+i: drop the oldest, add the newest.
            known = torch.cat([known[:, 1:], self.embed_frames(frames[-1][:, None])], dim=1)
            emb = known + cond[:, i : i + n]
            h = module(h, emb, memory, sm, cross_mask(vis[:, i : i + n], memory.shape[1]), cache.mtp[i - 1])
            frames.append(sample(module.logits(h[:, -1:])[:, 0]))
        cache.pos += n
        cache.forwards += 1
        return torch.stack(frames, dim=1)
