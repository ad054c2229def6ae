"""Streaming Mimi decode: each chunk of codes costs the same whatever came before it.

`MimiModel.decode` turns codes into audio through three causal stages; each keeps a small
state here instead of re-decoding the prefix:
- quantizer: per frame, no state;
- upsample (transposed conv, 12.5 -> 25 Hz) and the SEANet decoder (causal convs): a
  bounded left context of latents / transformer outputs that covers their receptive field,
  so the kept samples equal the full decode (`DecoderState.seanet_context`);
- decoder transformer: its own KV cache (`DynamicCache`, sliding window of the config).

    dec = MimiStreamDecoder(codec.model, n_codebooks=8)
    for codes in chunks:                      # [t, K] each, in order
        play(dec.decode(codes))               # [t * samples_per_frame]

Shape legend: K codebooks, t frames, C channels, S samples.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache, MimiModel


class MimiStreamDecoder:
    """Decode consecutive chunks of codes with carried state (exact up to fp rounding).

    Args:
        model: a `transformers.MimiModel` (its decoder is used).
        seanet_context: transformer-rate positions (25 Hz) re-run through the SEANet decoder as
            left context; 16 (0.64 s) exceeds its receptive field (first conv kernel 7 at 25 Hz,
            then a few samples per upsampling stage), which the tests check against the full decode.
    """

    def __init__(self, model: MimiModel, seanet_context: int = 16):
        self.model = model
        dec = model.decoder
        self.upsample, self.transformer, self.seanet = dec.upsample, dec.decoder_transformer, dec.decoder_seanet
        conv = self.upsample.conv if self.upsample is not None else None
        self.stride = conv.stride[0] if conv is not None else 1  # latent frame -> transformer positions
        # Latent frames a transposed conv output position depends on, before the current one.
        self.up_context = -(-conv.kernel_size[0] // conv.stride[0]) - 1 if conv is not None else 0
        self.seanet_context = seanet_context
        self.samples_per_position = int(np.prod(model.config.upsampling_ratios))
        self.reset()

    def reset(self) -> None:
        self.latents: torch.Tensor | None = None  # (1, C, <= up_context) last latent frames
        self.hidden: torch.Tensor | None = None  # (1, C, <= seanet_context) last transformer outputs
        self.cache = DynamicCache(config=self.transformer.config)
        self.frames = 0

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes: [t, K] (the next t frames) -> waveform [t * samples_per_frame] float32."""
        dev = next(self.model.parameters()).device
        ids = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=dev).T[None]  # (1, K, t)
        lat = self.model.quantizer.decode(ids)  # (1, C, t)
        lat = lat if self.latents is None else torch.cat([self.latents, lat], dim=2)
        ctx = 0 if self.latents is None else self.latents.shape[2]
        self.latents = lat[..., lat.shape[2] - self.up_context :] if self.up_context else None
        x = lat if self.upsample is None else self.upsample(lat)
        x = x[..., ctx * self.stride :]  # (1, C, t * stride): drop the context's own outputs
        h = self.transformer(x.transpose(1, 2), cache=self.cache, use_cache=True).last_hidden_state.transpose(1, 2)
        y = h if self.hidden is None else torch.cat([self.hidden, h], dim=2)
        skip = (y.shape[2] - h.shape[2]) * self.samples_per_position
        audio = self.seanet(y)[0, 0, skip:]  # (S,)
        self.hidden = y[..., -self.seanet_context :] if self.seanet_context else None
        self.frames += len(codes)
        return audio.float().cpu().numpy()
