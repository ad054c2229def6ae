"""Talker + MTP: gradients, forward counts, KV-cache vs full recompute, chunk-causal mask."""

from __future__ import annotations

import math

import pytest
import torch

from training.inference import GenerationConfig, make_sampler
from training.model.config import TalkerConfig, VocalNetConfig
from training.model.talker import Attention, LayerCache, Talker


def _talker(n_mtp=2, seed=0, **kw):
    torch.manual_seed(seed)
    return Talker(TalkerConfig(n_mtp=n_mtp, d_model=32, n_heads=2, n_layers=2, max_frames=128, **kw)).eval()


def _greedy(sp):
    return make_sampler(0.0, 0, torch.Generator(), [sp.start])


def _generate(talker, cond, n_frames, chunk_causal):
    """Cached generation with a fixed text memory; frames [1, F', K] in the delayed layout."""
    cache = talker.new_cache()
    codes_in = torch.full((1, 1, talker.cfg.n_codebooks), talker.sp.start)
    out, ends = [], []
    while sum(x.shape[1] for x in out) < n_frames:
        new = talker.generate_step(cache, codes_in, cond, 3, cond, torch.tensor([cond.shape[1]]),
                                   chunk_causal, _greedy(talker.sp))
        ends.append(cache.pos - 1)  # the position whose backbone + MTP outputs made `new`
        out.append(new)
        codes_in = new
    return torch.cat(out, dim=1), ends, cache


def test_mtp_heads_get_gradients_and_reach_backbone():
    t = _talker(n_mtp=3).train()
    targets = torch.randint(0, 2048, (2, 20, 8))
    cond = torch.randn(2, 6, 32)
    out = t(targets, cond, 3, cond, torch.tensor([6, 4]), chunk_causal=True)
    assert len(out.logits) == 4
    losses = t.losses(out, targets)
    assert {"loss/mtp1", "loss/mtp2", "loss/mtp3", "loss/speech"} <= set(losses)
    losses["loss/speech"].backward()
    for i, module in enumerate(t.mtp):
        for n, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"mtp{i + 1}.{n} got no gradient"
    # An MTP loss alone still trains the backbone (chained hidden states).
    t.zero_grad()
    out = t(targets, cond, 3, cond, torch.tensor([6, 4]))
    t.losses(out, targets)["loss/mtp3"].backward()
    assert t.blocks[0].self_attn.q.weight.grad.abs().sum() > 0
    assert t.heads.weight.grad is None or t.heads.weight.grad.abs().sum() == 0


def test_mtp_weights_decay():
    cfg = VocalNetConfig.tiny(n_mtp=4).talker
    assert [round(cfg.mtp_weight(i), 4) for i in range(1, 5)] == [0.8, 0.64, 0.512, 0.4096]
    assert VocalNetConfig.tiny(n_mtp=2, mtp_weights=[1.0, 0.5]).talker.mtp_weight(2) == 0.5


@pytest.mark.parametrize("n_mtp", [0, 1, 2, 4])
def test_forward_count_is_ceil_frames_over_n_plus_1(make_model, n_mtp):
    from tokenization.codec import SpeechCodec
    from training.inference import StreamingGenerator

    class NullCodec(SpeechCodec):  # counting forwards needs no waveform
        from tokenization.codec import CodecInfo

        info = CodecInfo("null", "0", "null", 24_000, 12.5, 8, 2048)

        def encode(self, waveforms):
            raise NotImplementedError

        def decode(self, codes):
            return [torch.zeros(len(c) * self.samples_per_frame).numpy() for c in codes]

    m = make_model(n_mtp=n_mtp)
    for frames in (7, 23):
        gen = StreamingGenerator(m, NullCodec(), gen=GenerationConfig(max_frames=frames, ignore_eos=True))
        _, codes, rep = gen.generate(reply_text="one two three four five six seven eight nine ten")
        assert codes.shape == (frames, 8)
        assert rep.talker_forwards == math.ceil(frames / (n_mtp + 1))


@pytest.mark.parametrize("n_mtp,chunk_causal,delays", [(0, False, None), (2, True, None), (4, True, [0, 1, 1, 1, 1, 1, 1, 1])])
def test_kv_cache_generation_equals_full_recompute(n_mtp, chunk_causal, delays):
    kw = {"delays": delays} if delays else {}
    t = _talker(n_mtp=n_mtp, chunk_frames=6, chunk_text=2, **kw)
    torch.manual_seed(1)
    cond = torch.randn(1, 7, 32)
    frames, ends, cache = _generate(t, cond, 31, chunk_causal)
    F = frames.shape[1]
    assert cache.forwards == len(ends) == math.ceil(31 / (n_mtp + 1))
    with torch.no_grad():
        out = t(frames, cond, 3, cond, torch.tensor([7]), chunk_causal=chunk_causal)
    # Backbone at each forward's last position p predicted frame p; MTP module i predicted p + i
    # (with N = 0 that is every position).
    for i in range(0, n_mtp + 1):
        lg = out.logits[i].clone()
        lg[..., t.sp.start] = -math.inf
        checked = [p for p in ends if p + i < F]
        assert checked
        assert torch.equal(lg[0, checked].argmax(-1), frames[0, [p + i for p in checked]])


def test_chunk_causal_mask_hides_future_text():
    t = _talker(n_mtp=1, chunk_frames=6, chunk_text=2)
    targets = torch.randint(0, 2048, (1, 18, 8))
    cond = torch.randn(1, 6, 32)
    cond2 = cond.clone()
    cond2[:, 4:] += 1.0  # text of chunk 2 changes
    with torch.no_grad():
        a = t(targets, cond, 3, cond, torch.tensor([6]), chunk_causal=True)
        b = t(targets, cond2, 3, cond2, torch.tensor([6]), chunk_causal=True)
        c = t(targets, cond2, 3, cond2, torch.tensor([6]), chunk_causal=False)
    # Frames 0..11 (chunks 0, 1) see text 0..3 only; MTP1 at position t predicts t+1, so <= 10.
    torch.testing.assert_close(a.logits[0][:, :12], b.logits[0][:, :12])
    torch.testing.assert_close(a.logits[1][:, :11], b.logits[1][:, :11])
    assert not torch.allclose(a.logits[0][:, 12:], b.logits[0][:, 12:])
    assert not torch.allclose(b.logits[0][:, :12], c.logits[0][:, :12])  # full context sees it


def _per_head_logits(heads, h):
    """Reference path: one [V, D] linear per codebook, stacked -> [B, n, K, V]."""
    return torch.stack([torch.nn.functional.linear(h, w) for w in heads.weight], dim=2)


def test_batched_heads_equal_per_head_path_and_greedy_output(monkeypatch):
    t = _talker(n_mtp=2, chunk_frames=6, chunk_text=2)
    h = torch.randn(2, 5, 32)
    for heads in [t.heads] + [m.heads for m in t.mtp]:
        torch.testing.assert_close(heads(h), _per_head_logits(heads, h), rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)
    cond = torch.randn(1, 7, 32)
    batched, _, _ = _generate(t, cond, 21, chunk_causal=True)
    monkeypatch.setattr(type(t.heads), "forward", _per_head_logits)
    per_head, _, _ = _generate(t, cond, 21, chunk_causal=True)
    assert torch.equal(batched, per_head)


def test_old_per_codebook_state_dict_loads():
    """Checkpoints written before the batched layout (emb.k / heads.k per codebook) still load."""
    t = _talker(n_mtp=1)
    old = {}
    for name, p in t.state_dict().items():
        if name.endswith(("emb.weight", "heads.weight")):
            old.update({name.replace("weight", f"{k}.weight"): p[k].clone() for k in range(p.shape[0])})
        else:
            old[name] = p.clone()
    assert "heads.3.weight" in old and "mtp.0.heads.7.weight" in old and "emb.0.weight" in old
    fresh = _talker(n_mtp=1, seed=5)
    fresh.load_state_dict(old, strict=True)
    for name, p in t.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], p), name


def test_cached_text_memory_kv_equals_recompute():
    torch.manual_seed(0)
    attn = Attention(32, 2, 0.0).eval()
    memory = torch.randn(1, 9, 32)
    cache = LayerCache()
    for r in (3, 4, 9):  # the text grows by appending
        x = torch.randn(1, 2, 32)
        mask = torch.ones(1, 1, 2, r, dtype=torch.bool)
        torch.testing.assert_close(attn(x, mask, kv=memory[:, :r], cache=cache), attn(x, mask, kv=memory[:, :r]))
        assert cache.mk.shape[2] == r and cache.k is None  # only the new rows were projected and kept
    with pytest.raises(ValueError, match="shrank"):
        attn(x, mask[..., :2], kv=memory[:, :2], cache=cache)


def test_generation_with_growing_text_and_cached_memory_equals_recompute():
    """Streaming appends text between forwards: cached cross K/V gives the same frames and logits as
    projecting the whole memory again in every forward."""
    t = _talker(n_mtp=4, chunk_frames=6, chunk_text=2)
    torch.manual_seed(2)
    text = torch.randn(1, 12, 32)

    def run(reset_memory_kv: bool):
        cache, codes_in, out = t.new_cache(), torch.full((1, 1, 8), t.sp.start), []
        seen = []
        for step in range(6):
            cond = text[:, : 2 + 2 * step]  # grows by appending
            if reset_memory_kv:
                for c in cache.backbone + cache.mtp:
                    c.mk = c.mv = None
            logits = []
            sample = _greedy(t.sp)
            new = t.generate_step(cache, codes_in, cond, 3, cond, torch.tensor([cond.shape[1]]), True,
                                  lambda lg: (logits.append(lg), sample(lg))[1])
            seen.append(torch.stack(logits))
            out.append(new)
            codes_in = new
        return torch.cat(out, dim=1), seen

    frames, logits = run(False)
    ref_frames, ref_logits = run(True)
    assert torch.equal(frames, ref_frames)
    for a, b in zip(logits, ref_logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_self_attention_cache_grows_past_its_buffer_and_keeps_every_step():
    """Appends copy only the new positions into a doubling buffer; what comes back is every
    step so far, in order, across growths (capacity 64, then 128, 256)."""
    torch.manual_seed(0)
    cache, ks, vs = LayerCache(), [], []
    for n in [1, 5, 5, 60, 5, 100, 1]:
        k, v = torch.randn(1, 2, n, 4), torch.randn(1, 2, n, 4)
        ks.append(k), vs.append(v)
        got_k, got_v = cache.append(k, v)
        assert torch.equal(got_k, torch.cat(ks, 2)) and torch.equal(got_v, torch.cat(vs, 2))
    assert cache.length == 177 and cache._k.shape[2] == 256
