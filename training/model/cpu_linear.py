"""Linear layers at CPU fp32 inference: oneDNN kernels, with weights packed once.

Why: streaming inference runs linears on 1-18 rows (one Thinker token, the 5 positions of an
MTP forward, a short prompt). For so few rows MKL's sgemm (`F.linear`) repacks the whole weight
on every call: 5 rows cost ~4.5x one row, where a memory-bound step should cost the same. oneDNN
with the weight reordered once into its blocked layout (what IPEX and Inductor's freezing do)
reads the weight once per call: 5 rows cost ~1.3x one row and one row ~0.7x `F.linear`
(Thinker's 151,936-row LM head: 16.7 ms against 29.8 ms on one AVX-512 core).

`pack_linears(model)` stores a packed copy beside each linear's weight (an extra copy of the
linear weights: an inference-time choice, see `GenerationConfig.pack_weights`). A packed copy
is used only while it matches the weight (same storage, no in-place update since), autograd is
off and the input is CPU fp32; anything else (training, an optimizer step, bf16, CUDA) takes
`F.linear`, so packing never changes what a model computes beyond fp32 rounding.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.nn import functional as F

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class Packed:
    """A oneDNN-reordered copy of one weight [out, in], valid while the weight is unchanged."""

    def __init__(self, weight: torch.Tensor):
        self.key = _key(weight)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach())

    def matches(self, weight: torch.Tensor) -> bool:
        return self.key == _key(weight)


def _key(w: torch.Tensor) -> tuple:
    # `_version` counts in-place updates (optimizer steps, load_state_dict's copy_); data_ptr
    # changes when the weight is moved or replaced.
    return w.data_ptr(), w._version, tuple(w.shape), w.dtype, w.device


def packable(w: torch.Tensor) -> bool:
    return ONEDNN and w.device.type == "cpu" and w.dtype == torch.float32 and w.dim() == 2


def _applies(packed: Packed | None, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The packed copy may stand in for `weight`: CPU fp32 input, autograd off, weight unchanged."""
    return (packed is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_grad_enabled() and packed.matches(weight))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           packed: Packed | None = None) -> torch.Tensor:
    """`F.linear`, through the packed oneDNN weight when it applies (see the module doc)."""
    if _applies(packed, x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, packed.weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def linear_gelu(lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`gelu(lin(x))` (exact GELU); on a packed weight oneDNN applies the GELU as it writes the
    output, instead of a second pass over it."""
    packed = lin.__dict__.get("packed")
    if _applies(packed, x, lin.weight):
        return torch.ops.mkldnn._linear_pointwise(x, packed.weight, lin.bias, "gelu", [], "none")
    return F.gelu(lin(x))


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, self.weight, self.bias, self.packed)


class PackedWeight(nn.Module):
    """Mixin for modules that run `linear` over a weight of their own (e.g. stacked heads):
    `packed_weight()` is the [out, in] matrix to pack; `self.packed` holds the copy."""

    packed: Packed | None = None

    def packed_weight(self) -> torch.Tensor:
        raise NotImplementedError


def pack_linears(model: nn.Module) -> int:
    """Pack every `nn.Linear` (and `PackedWeight`) of `model` that holds a CPU fp32 weight.

    Covers any module tree: our Talker, `transformers`' Qwen3 and Mimi, peft's LoRA layers
    (their base and adapter linears are plain `nn.Linear`). A copy that still matches its weight is
    kept, so packing a model again (a second generator over it) only repacks what changed.
    Returns how many linears hold a packed copy.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            weight = m.weight
        elif isinstance(m, PackedWeight):
            weight = m.packed_weight()
        else:
            continue
        if not packable(weight):
            continue
        packed = m.__dict__.get("packed")
        if packed is None or not packed.matches(weight):
            m.packed = Packed(weight)
        if isinstance(m, nn.Linear):
            m.forward = types.MethodType(_packed_forward, m)
        n += 1
    return n


def unpack_linears(model: nn.Module) -> None:
    """Drop the packed copies (their memory) and restore the plain forwards."""
    for m in model.modules():
        if isinstance(m, nn.Linear) and "packed" in m.__dict__:
            del m.packed, m.forward
        elif isinstance(m, PackedWeight):
            m.packed = None
