"""VocalNet-M2: Whisper encoder -> adaptor -> Thinker (Qwen3 + LoRA) -> Fusion -> Talker (+MTP).

`forward(batch, stage)` computes the stage's losses from a batch built by
`training.data.collate` (keys documented there). Stages:
  1: TTS, trains Fusion + Talker, Thinker frozen (speech CE + MTP);
  2: speech -> text, trains adaptor + LoRA (text CE);
  3: speech -> text + speech, trains adaptor + LoRA + Fusion + Talker (all losses).
The Whisper encoder and the Qwen3 base weights are always frozen.

Checkpoint layout (`save_pretrained`), nothing pickled:
  config.json             VocalNetConfig.to_dict() (+ "format")
  model.safetensors       every tensor except LoRA and weights reloaded from cfg paths
  thinker_lora/           peft adapter (adapter_config.json + adapter_model.safetensors)
  tokenizer.json          copy of the tokenizer file, when one was given as a file
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from training.model.adaptor import Adaptor
from training.model.audio_encoder import AudioEncoder
from training.model.codebook_layout import IGNORE, SpecialTokens, build_targets
from training.model.config import EXPORT_FORMAT, VocalNetConfig, torch_dtype
from training.model.fusion import Fusion
from training.model.talker import Talker, TalkerOutput
from training.model.thinker import Thinker, load_tokenizer

FORMAT = EXPORT_FORMAT
STAGE_TRAINS = {1: ("fusion", "talker"), 2: ("adaptor", "lora"), 3: ("adaptor", "lora", "fusion", "talker")}


@dataclass
class TeacherForced:
    """One batch's teacher-forced outputs; a part is None when the stage does not compute it.

    text_logits [B, L-1, V] and text_labels [B, L-1] (IGNORE where no loss) are aligned;
    talker.logits[i] at position t predicts targets[:, t + i] ([B, T', K], IGNORE beyond).
    """

    text_logits: torch.Tensor | None = None
    text_labels: torch.Tensor | None = None
    talker: TalkerOutput | None = None
    targets: torch.Tensor | None = None
    n_frames: torch.Tensor | None = None  # [B] real frames per row


def gather_rows(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the masked positions of each row to the left.

    Args:
        x: [B, L, H]; mask: [B, L] bool.
    Returns:
        ([B, R, H] packed, zeros past each row's count; [B] counts), R = max count (>= 1).
    """
    counts = mask.sum(1)
    R = max(1, int(counts.max()))
    # Stable sort puts masked positions first, in order.
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :R]  # (B, R)
    packed = torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))
    valid = torch.arange(R, device=x.device)[None, :] < counts[:, None]
    return packed * valid[..., None].to(packed.dtype), counts


class VocalNetM2(nn.Module):
    def __init__(self, cfg: VocalNetConfig, tokenizer_path: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer_path = tokenizer_path
        self.tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
        self.audio_encoder = AudioEncoder(cfg.audio)
        self.thinker = Thinker(cfg.thinker)
        self.adaptor = Adaptor(cfg.adaptor, self.audio_encoder.d_model, self.thinker.d_model)
        self.fusion = Fusion(cfg.fusion, self.thinker.d_model, cfg.talker.d_model)
        self.talker = Talker(cfg.talker)
        if self.tokenizer is not None and len(self.tokenizer) > self.thinker.vocab_size:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens, Thinker vocab {self.thinker.vocab_size}")
        dtype = torch_dtype(cfg.dtype)
        for part in (self.thinker, self.adaptor, self.fusion, self.talker):
            part.to(device=cfg.device, dtype=dtype)
        self.audio_encoder.to(device=cfg.device, dtype=torch_dtype(cfg.audio.dtype))
        self.stage = 0
        self.requires_grad_(False)

    @property
    def special(self) -> SpecialTokens:
        return self.talker.sp

    # --- stages ------------------------------------------------------------------------------
    def set_stage(self, stage: int) -> None:
        """Freeze everything, then unfreeze what `stage` trains (1|2|3, see module docstring)."""
        if stage not in STAGE_TRAINS:
            raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
        self.stage = stage
        self.requires_grad_(False)
        for part in STAGE_TRAINS[stage]:
            if part == "lora":
                for p in self.thinker.lora_parameters():
                    p.requires_grad_(True)
            else:
                getattr(self, part).requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # --- pieces ------------------------------------------------------------------------------
    def embed_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token embeddings with adapted speech placed at `speech_mask` positions.

        Returns:
            [B, L, H].
        """
        emb = self.thinker.embed(batch["text_ids"])  # (B, L, H)
        speech_mask = batch.get("speech_mask")
        if speech_mask is None or not bool(speech_mask.any()):
            return emb
        enc = self.audio_encoder(batch["input_features"])  # (B, S, d_whisper), no grad
        speech = self.adaptor(enc.to(emb.dtype))  # (B, S/k, H)
        n = speech_mask.sum(1)  # (B,)
        take = torch.arange(speech.shape[1], device=emb.device)[None, :] < n[:, None]  # (B, S/k)
        placed = torch.zeros_like(emb)
        placed[speech_mask] = speech[take]  # row-major order matches on both sides
        return torch.where(speech_mask[..., None], placed, emb)

    def text_condition(self, hidden: torch.Tensor, text_ids: torch.Tensor, reply_mask: torch.Tensor):
        """Fusion over the reply positions.

        Returns:
            ([B, R, D] condition per reply token, [B] reply lengths).
        """
        h, n_text = gather_rows(hidden, reply_mask)
        e, _ = gather_rows(self.thinker.embed(text_ids), reply_mask)
        return self.fusion(h, e), n_text

    # --- training ----------------------------------------------------------------------------
    def teacher_forced(self, batch: dict[str, torch.Tensor], stage: int) -> TeacherForced:
        """Teacher-forced logits and their targets for `stage` (what `forward`'s losses and the
        evaluation's accuracies are computed from)."""
        thinker_grad = stage in (2, 3) and torch.is_grad_enabled()
        with torch.set_grad_enabled(thinker_grad):
            emb = self.embed_inputs(batch)
            hidden, logits, _ = self.thinker(emb, batch["text_mask"])
        out = TeacherForced()
        if stage in (2, 3):
            out.text_logits, out.text_labels = logits[:, :-1], batch["labels"][:, 1:]  # token t predicts t+1
        if stage in (1, 3):
            cond_text, n_text = self.text_condition(hidden, batch["text_ids"], batch["reply_mask"])
            out.n_frames = batch["codes_mask"].sum(1)
            out.targets = build_targets(batch["codes"], out.n_frames, self.cfg.talker.delays, self.special)
            out.talker = self.talker(out.targets, cond_text, self.cfg.fusion.upsample, cond_text, n_text,
                                     chunk_causal=self._chunk_causal(batch))
        return out

    def forward(self, batch: dict[str, torch.Tensor], stage: int) -> dict[str, torch.Tensor]:
        """Losses of one batch for `stage`.

        Returns:
            {"loss", "loss/text" (2, 3), "loss/speech", "loss/cb0".."loss/cb{K-1}", "loss/mtp1".. (1, 3),
             "n_text_tokens", "n_frames"}.
        """
        tf = self.teacher_forced(batch, stage)
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=torch.float32, device=batch["text_ids"].device)
        if tf.text_logits is not None:
            out["loss/text"] = F.cross_entropy(tf.text_logits.reshape(-1, tf.text_logits.shape[-1]).float(),
                                               tf.text_labels.reshape(-1), ignore_index=IGNORE)
            out["n_text_tokens"] = (tf.text_labels != IGNORE).sum()
            total = total + out["loss/text"]
        if tf.talker is not None:
            out.update(self.talker.losses(tf.talker, tf.targets))
            out["n_frames"] = tf.n_frames.sum()
            total = total + out["loss/speech"]
        out["loss"] = total
        return out

    def _chunk_causal(self, batch: dict[str, torch.Tensor]) -> bool:
        """Batch key `chunk_causal` forces the mask; else drawn with `chunk_causal_prob` in training."""
        if "chunk_causal" in batch:
            return bool(batch["chunk_causal"])
        return self.training and bool(torch.rand(()) < self.cfg.talker.chunk_causal_prob)

    # --- checkpoints -------------------------------------------------------------------------
    def _reloaded_from_paths(self, name: str) -> bool:
        """Tensors that come back from cfg paths (pretrained, frozen) rather than the checkpoint."""
        if name.startswith("audio_encoder.") and self.cfg.audio.path:
            return True
        return name.startswith("thinker.") and bool(self.cfg.thinker.path)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"format": FORMAT, **self.cfg.to_dict()}, indent=2))
        tensors = {
            name: t.detach().contiguous().cpu()
            for name, t in self.state_dict().items()
            if "lora_" not in name and not self._reloaded_from_paths(name)
        }
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": FORMAT})
        self.thinker.lm.save_pretrained(str(out / "thinker_lora"), safe_serialization=True)
        if self.tokenizer_path and os.path.isfile(self.tokenizer_path):
            shutil.copyfile(self.tokenizer_path, out / "tokenizer.json")

    @classmethod
    def from_pretrained(cls, out_dir: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                        tokenizer_path: str | None = None) -> "VocalNetM2":
        """Rebuild from `save_pretrained` output; safetensors only, nothing unpickled."""
        out = Path(out_dir)
        cfg = VocalNetConfig.from_export(json.loads((out / "config.json").read_text()), where=str(out))
        cfg.device = device or cfg.device
        cfg.dtype = dtype or cfg.dtype
        if tokenizer_path is None and (out / "tokenizer.json").is_file():
            tokenizer_path = str(out / "tokenizer.json")
        model = cls(cfg, tokenizer_path=tokenizer_path)
        state = load_file(str(out / "model.safetensors"), device=str(cfg.device))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if "lora_" not in m and not model._reloaded_from_paths(m)]
        if missing or unexpected:
            raise ValueError(f"checkpoint mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        lora = load_file(str(out / "thinker_lora" / "adapter_model.safetensors"), device=str(cfg.device))
        result = set_peft_model_state_dict(model.thinker.lm, lora)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"LoRA mismatch: unexpected {result.unexpected_keys[:5]}")
        return model
