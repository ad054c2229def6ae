"""Shard rows -> VocalNet-M2 batches, one pure function per stage (no Ray, no I/O).

Prompt layout (text markers come from `ThinkerConfig`, so any tokenizer works):
  stage 1 (TTS):        [assistant_prefix] reply [eos]
  stage 2/3 (dialogue): [user_prefix] <speech x n_speech> [assistant_prefix] reply [eos]

Batch keys (B batch, L text positions, T frames, K codebooks, F mel frames):
  text_ids      [B, L] int64   token ids; speech positions hold the pad id
  text_mask     [B, L] int64   1 = real position (right padding)
  labels        [B, L] int64   reply tokens + eos, IGNORE (-100) elsewhere; unshifted
  reply_mask    [B, L] bool    reply token positions the Talker conditions on (no eos)
  speech_mask   [B, L] bool    positions replaced by adapted speech (stages 2, 3)
  input_features [B, n_mels, F] float32 Whisper log-mel, F = 2 * max_source_positions (2, 3)
  feature_mask  [B, F] int64   1 = mel frame from real audio (2, 3)
  codes         [B, T, K] int64 codec codes, zero padded (stages 1, 3)
  codes_mask    [B, T] bool    1 = real frame (1, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training.model.adaptor import n_adapted_frames
from training.model.audio_encoder import n_encoder_frames
from training.model.codebook_layout import IGNORE
from training.model.config import VocalNetConfig


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def eos_id(tokenizer, cfg: VocalNetConfig) -> int:
    i = tokenizer.convert_tokens_to_ids(cfg.thinker.eos_token)
    if i is None or i == tokenizer.unk_token_id:
        raise ValueError(f"eos token {cfg.thinker.eos_token!r} is not one token of this tokenizer")
    return int(i)


def encode_prompt(tokenizer, cfg: VocalNetConfig, n_speech: int = 0, user_text: str | None = None,
                  reply: str | None = None, add_eos: bool = True) -> dict[str, list]:
    """One row's layout as lists: ids, speech/reply masks and labels.

    `n_speech` > 0 or `user_text` adds the user turn; `n_speech == 0 and user_text is None` gives
    the stage-1 layout. `reply=None` stops after the assistant prefix (generation prompt).
    """
    pad = eos_id(tokenizer, cfg)
    ids: list[int] = []
    speech: list[bool] = []
    if n_speech or user_text is not None:
        ids += _ids(tokenizer, cfg.thinker.user_prefix)
        ids += [pad] * n_speech
        speech = [False] * len(ids)
        speech[len(ids) - n_speech :] = [True] * n_speech
        if user_text:
            ids += _ids(tokenizer, user_text)
    ids += _ids(tokenizer, cfg.thinker.assistant_prefix)
    speech += [False] * (len(ids) - len(speech))
    labels = [IGNORE] * len(ids)
    reply_flags = [False] * len(ids)
    if reply is not None:
        r = _ids(tokenizer, reply)
        ids += r
        labels += r
        reply_flags += [True] * len(r)
        if add_eos:
            ids.append(pad)
            labels.append(pad)
            reply_flags.append(False)
        speech += [False] * (len(ids) - len(speech))
    return {"ids": ids, "speech": speech, "labels": labels, "reply": reply_flags}


def _pad_text(rows: list[dict[str, list]], pad: int, max_len: int) -> dict[str, torch.Tensor]:
    L = min(max(len(r["ids"]) for r in rows), max_len)
    B = len(rows)
    out = {
        "text_ids": torch.full((B, L), pad, dtype=torch.long),
        "text_mask": torch.zeros(B, L, dtype=torch.long),
        "labels": torch.full((B, L), IGNORE, dtype=torch.long),
        "reply_mask": torch.zeros(B, L, dtype=torch.bool),
        "speech_mask": torch.zeros(B, L, dtype=torch.bool),
    }
    for b, r in enumerate(rows):
        n = min(len(r["ids"]), L)  # truncation cuts the reply's tail, never the speech
        out["text_ids"][b, :n] = torch.tensor(r["ids"][:n])
        out["text_mask"][b, :n] = 1
        out["labels"][b, :n] = torch.tensor(r["labels"][:n])
        out["reply_mask"][b, :n] = torch.tensor(r["reply"][:n])
        out["speech_mask"][b, :n] = torch.tensor(r["speech"][:n])
    return out


def first_tracks(codes: Any, k: int) -> np.ndarray:
    """Codes [T, K'] (K' >= k) -> their first k codebook tracks [T, k]: a Talker on fewer codebooks than the shards
    hold trains on the same shards (the codebooks experiment); flat codes are read as [T, k]."""
    a = np.asarray(codes, dtype=np.int64)
    return a[:, :k] if a.ndim == 2 else a.reshape(-1, k)


def _pad_codes(codes_list: list[Any], cfg: VocalNetConfig) -> dict[str, torch.Tensor]:
    K = cfg.talker.n_codebooks
    # Room for the end frame and the delays inside the learned positions.
    max_t = cfg.talker.max_frames - 1 - max(cfg.talker.delays)
    arrs = [first_tracks(c, K)[:max_t] for c in codes_list]
    T = max(1, max(len(a) for a in arrs))
    codes = torch.zeros(len(arrs), T, K, dtype=torch.long)
    mask = torch.zeros(len(arrs), T, dtype=torch.bool)
    for b, a in enumerate(arrs):
        codes[b, : len(a)] = torch.from_numpy(a)
        mask[b, : len(a)] = True
    return {"codes": codes, "codes_mask": mask}


def _features(rows, cfg: VocalNetConfig, feature_extractor) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Log-mel of each row's `user_audio` (16 kHz), cut to the encoder window; speech positions per row."""
    audio = [np.asarray(r["user_audio"], dtype=np.float32)[: cfg.audio.max_samples] for r in rows]
    feats = feature_extractor(audio, sampling_rate=cfg.audio.sampling_rate, padding="max_length",
                              max_length=cfg.audio.max_samples, return_attention_mask=True, return_tensors="pt")
    fmask = feats["attention_mask"].long()  # (B, F)
    n_speech = [n_adapted_frames(int(n_encoder_frames(m.sum())), cfg.adaptor.k) for m in fmask]
    return {"input_features": feats["input_features"].float(), "feature_mask": fmask}, n_speech


def collate_tts(rows: list[dict], tokenizer, cfg: VocalNetConfig) -> dict[str, torch.Tensor]:
    """Stage 1 rows {text, codes [T, K], n_frames} -> batch (text_*, labels, reply_mask, codes*)."""
    enc = [encode_prompt(tokenizer, cfg, reply=r["text"]) for r in rows]
    batch = _pad_text(enc, eos_id(tokenizer, cfg), cfg.thinker.max_text_len)
    batch.update(_pad_codes([first_tracks(r["codes"], cfg.talker.n_codebooks)[: int(r.get("n_frames", 1 << 30))]
                             for r in rows], cfg))
    return batch


def collate_speech_to_text(rows: list[dict], tokenizer, cfg: VocalNetConfig, feature_extractor) -> dict[str, torch.Tensor]:
    """Stage 2 rows {user_audio, assistant_text} -> batch (text_*, labels, masks, input_features)."""
    feats, n_speech = _features(rows, cfg, feature_extractor)
    enc = [encode_prompt(tokenizer, cfg, n_speech=n, reply=r["assistant_text"]) for r, n in zip(rows, n_speech)]
    batch = _pad_text(enc, eos_id(tokenizer, cfg), cfg.thinker.max_text_len)
    batch.update(feats)
    return batch


def collate_dialogue(rows: list[dict], tokenizer, cfg: VocalNetConfig, feature_extractor) -> dict[str, torch.Tensor]:
    """Stage 3 rows {user_audio, assistant_text, assistant_codes [T, K]} -> every batch key."""
    batch = collate_speech_to_text(rows, tokenizer, cfg, feature_extractor)
    batch.update(_pad_codes([r["assistant_codes"] for r in rows], cfg))
    return batch
