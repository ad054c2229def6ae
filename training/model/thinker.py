"""Thinker: Qwen3 (`transformers`) with LoRA adapters from `peft` on the Qwen3 only.

Speech enters the LLM as embeddings: the batch marks positions with `speech_mask` and the
adapted Whisper states replace the token embeddings there (Qwen2-Audio/LLaVA layout).
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

from training.model.config import ThinkerConfig


def build_qwen3(cfg: ThinkerConfig) -> Qwen3ForCausalLM:
    """Local checkpoint (never downloads) or random-init tiny Qwen3 of the real class."""
    if cfg.path:
        return Qwen3ForCausalLM.from_pretrained(cfg.path, local_files_only=True, dtype=torch.float32)
    qcfg = Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=4096, tie_word_embeddings=False,
    )
    return Qwen3ForCausalLM(qcfg)


class Thinker(nn.Module):
    def __init__(self, cfg: ThinkerConfig):
        super().__init__()
        self.cfg = cfg
        lm = build_qwen3(cfg)
        self.d_model = lm.config.hidden_size
        self.vocab_size = lm.config.vocab_size
        lora = LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets), bias="none",
        )
        self.lm = get_peft_model(lm, lora)  # LoRA wraps the Qwen3 and nothing else

    @property
    def base(self) -> Qwen3ForCausalLM:
        return self.lm.get_base_model()  # modules already carry the injected LoRA layers

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] token ids -> [B, L, H] input embeddings."""
        return self.base.get_input_embeddings()(ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ):
        """
        Args:
            inputs_embeds: [B, L, H] token and speech embeddings.
            attention_mask: [B, L] (or [B, L_past + L] with a cache), 1 = real position.
            cache: a transformers `Cache` (e.g. `DynamicCache`) to extend, for streaming.
            logits_to_keep: > 0: logits of the last that many positions only (a prompt's prefill
                needs the last one; the LM head is 151,936 x H for Qwen3), 0: all.
        Returns:
            hidden: [B, L, H] last hidden state (after the final norm),
            logits: [B, L or logits_to_keep, V], and the cache (None unless `use_cache`).
        """
        out = self.base.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            cache=cache, use_cache=use_cache,
        )
        hidden = out.last_hidden_state
        return hidden, self.base.lm_head(hidden[:, -logits_to_keep:]), out.cache

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.lm.named_parameters() if "lora_" in n]


def load_tokenizer(path: str):
    """A local tokenizer: a `tokenizer.json` file or a folder with one; never a hub id."""
    import os

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if os.path.isfile(path):
        return PreTrainedTokenizerFast(tokenizer_file=path)
    if os.path.isdir(path):
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    raise FileNotFoundError(f"tokenizer {path!r}: not a local file or folder")
