"""Packed oneDNN linears at CPU fp32 inference compute what `F.linear` does, and step aside
whenever they would not (autograd on, weight updated in place, other dtype)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

from training.model.config import TalkerConfig
from training.model.cpu_linear import ONEDNN, linear, pack_linears, unpack_linears
from training.model.talker import Talker

pytestmark = pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN")


def test_packed_linear_matches_f_linear_and_falls_back_when_stale():
    torch.manual_seed(0)
    lin = nn.Linear(32, 64)
    x = torch.randn(1, 5, 32)
    ref = nn.functional.linear(x, lin.weight, lin.bias)
    assert pack_linears(lin) == 1
    first = lin.packed
    assert pack_linears(lin) == 1 and lin.packed is first  # packed again: the matching copy is kept
    with torch.no_grad():
        torch.testing.assert_close(lin(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lin(x[0, :1]), ref[0, :1], rtol=1e-5, atol=1e-5)  # 2-D, one row
        lin.weight.mul_(2)  # an in-place update (an optimizer step): the packed copy is stale
        torch.testing.assert_close(lin(x), nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
        pack_linears(lin)  # ... and is replaced when packed again
        assert lin.packed is not first and lin.packed.matches(lin.weight)
    lin.weight.data = torch.zeros_like(lin.weight)  # replaced storage: stale too
    with torch.no_grad():
        assert torch.equal(lin(x), lin.bias.expand(1, 5, 64))
    # Autograd on: plain F.linear, differentiable.
    x.requires_grad_(True)
    lin(x).sum().backward()
    torch.testing.assert_close(x.grad, lin.weight.sum(0).expand_as(x))
    unpack_linears(lin)
    assert "forward" not in lin.__dict__ and "packed" not in lin.__dict__


def test_bf16_weights_are_not_packed():
    assert pack_linears(nn.Linear(8, 8).to(torch.bfloat16)) == 0
    with torch.no_grad():  # fp32 packed copy, bf16 input: F.linear
        x = torch.randn(2, 8)
        assert linear(x.bfloat16(), torch.randn(8, 8).bfloat16()).dtype == torch.bfloat16


def test_packed_talker_and_qwen3_give_the_same_logits():
    """Every linear of our Talker (heads included) and of transformers' Qwen3 gets packed, and
    the packed models compute the same logits; greedy MTP generation gives the same frames."""
    torch.manual_seed(0)
    qwen = Qwen3ForCausalLM(Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16)).eval()
    ids = torch.randint(0, 300, (1, 9))
    talker = Talker(TalkerConfig(n_mtp=4, d_model=32, n_heads=2, n_layers=2, max_frames=64)).eval()
    cond = torch.randn(1, 6, 32)
    sample = lambda logits: logits.argmax(-1)  # noqa: E731

    def run():
        with torch.no_grad():
            logits = qwen(ids).logits
            cache, codes, frames = talker.new_cache(), torch.full((1, 1, 8), talker.sp.start), []
            for _ in range(4):
                codes = talker.generate_step(cache, codes, cond, 3, cond, torch.tensor([6]), True, sample)
                frames.append(codes)
        return logits, torch.cat(frames, 1)

    ref_logits, ref_frames = run()
    n_talker = pack_linears(talker)
    assert n_talker == sum(isinstance(m, nn.Linear) for m in talker.modules()) + 1 + 4  # + heads per depth
    assert pack_linears(qwen) == sum(isinstance(m, nn.Linear) for m in qwen.modules())
    logits, frames = run()
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(frames, ref_frames)


def test_fused_gelu_equals_linear_then_gelu():
    from training.model.cpu_linear import linear_gelu

    torch.manual_seed(0)
    lin, x = nn.Linear(16, 48), torch.randn(1, 5, 16)
    ref = nn.functional.gelu(lin(x)).detach()
    pack_linears(lin)
    with torch.no_grad():
        torch.testing.assert_close(linear_gelu(lin, x), ref, rtol=1e-5, atol=1e-5)
    assert linear_gelu(lin, x).requires_grad  # autograd on: the plain, differentiable path
