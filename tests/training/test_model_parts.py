"""Shapes of every part, collation, stages/freezing, one training step, save/load round trip."""

from __future__ import annotations

import json

import pytest
import torch

from training.data.collate import collate_dialogue, collate_speech_to_text, collate_tts
from training.model import VocalNetConfig
from training.model.adaptor import Adaptor
from training.model.audio_encoder import build_feature_extractor
from training.model.codebook_layout import IGNORE, SpecialTokens, apply_delay, build_targets, shift_inputs, undelay
from training.model.config import AdaptorConfig, FusionConfig
from training.model.fusion import Fusion


def test_config_round_trip_and_presets():
    cfg = VocalNetConfig.tiny(n_mtp=3)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert VocalNetConfig.from_dict(d) == cfg
    assert VocalNetConfig.from_dict({**d, "talker": {**d["talker"], "n_mtp": 2}}).talker.n_mtp == 2
    with pytest.raises(ValueError):
        VocalNetConfig.from_dict({"talker": {"n_mpt": 2}})
    paper = VocalNetConfig.paper("/ckpt/whisper-large-v3", "/ckpt/qwen3-8b")
    assert paper.talker.n_mtp == 4 and paper.audio.n_mels == 128 and paper.audio.max_source_positions == 1500
    assert [round(paper.talker.mtp_weight(i), 3) for i in (1, 2)] == [0.8, 0.64]


def test_delay_layout_round_trip():
    sp = SpecialTokens.for_codebook_size(2048)
    codes = torch.randint(0, 2048, (2, 6, 4))
    delays = [0, 1, 2, 2]
    d = apply_delay(codes, delays, sp.pad)
    assert d.shape == (2, 8, 4) and (d[:, 0, 1:] == sp.pad).all()
    assert torch.equal(undelay(d, delays), codes)
    tgt = build_targets(codes, torch.tensor([6, 3]), delays, sp)  # (B, T+1+D, K)
    assert tgt.shape == (2, 9, 4)
    assert tgt[1, 3, 0] == sp.end and tgt[1, 4, 0] == IGNORE and tgt[1, 5, 2] == sp.end
    assert (shift_inputs(tgt, sp)[:, 0] == sp.start).all()


def test_part_shapes(make_model):
    m = make_model()
    cfg = m.cfg
    enc = m.audio_encoder(torch.randn(2, cfg.audio.n_mels, cfg.audio.n_mel_frames))
    assert enc.shape == (2, cfg.audio.max_source_positions, cfg.audio.d_model)
    assert not any(p.requires_grad for p in m.audio_encoder.parameters())
    ad = Adaptor(AdaptorConfig(k=4, hidden=32), 64, 48)
    assert ad(torch.randn(2, 50, 64)).shape == (2, 12, 48)  # 50 // 4 groups of 4 frames
    fu = Fusion(FusionConfig(hidden=32, upsample=3), 64, 40)
    c = fu(torch.randn(2, 5, 64), torch.randn(2, 5, 64))
    assert c.shape == (2, 5, 40) and fu.upsample(c).shape == (2, 15, 40)
    hidden, logits, _ = m.thinker(m.thinker.embed(torch.tensor([[1, 2, 3]])))
    assert hidden.shape == (1, 3, cfg.thinker.d_model) and logits.shape == (1, 3, cfg.thinker.vocab_size)
    t = cfg.talker
    targets = torch.randint(0, t.codebook_size, (2, 10, t.n_codebooks))
    out = m.talker(targets, torch.randn(2, 4, t.d_model), 3, torch.randn(2, 4, t.d_model), torch.tensor([4, 2]))
    assert out.hidden.shape == (2, 10, t.d_model) and out.logits[0].shape == (2, 10, t.n_codebooks, t.vocab)


def test_collate_batches(tokenizer, tts_rows, dialogue_rows):
    cfg = VocalNetConfig.tiny()
    b1 = collate_tts(tts_rows, tokenizer, cfg)
    assert b1["codes"].shape == (2, 22, 8) and b1["codes"].dtype == torch.int64
    assert b1["codes_mask"].sum(1).tolist() == [22, 9]
    assert b1["text_ids"].shape == b1["labels"].shape == b1["reply_mask"].shape
    assert not b1["speech_mask"].any()
    # The reply tokens decode back to the text; labels = reply + eos.
    assert tokenizer.decode(b1["text_ids"][0][b1["reply_mask"][0]]) == "hello there my friend"
    assert (b1["labels"] != IGNORE).sum(1).tolist() == (b1["reply_mask"].sum(1) + 1).tolist()
    fe = build_feature_extractor(cfg.audio)
    b2 = collate_speech_to_text(dialogue_rows, tokenizer, cfg, fe)
    assert b2["input_features"].shape == (2, cfg.audio.n_mels, cfg.audio.n_mel_frames)
    # 1 s = 100 mel frames -> 50 encoder frames -> 12 positions; 2.5 s is cut to the 2 s window -> 25.
    assert b2["speech_mask"].sum(1).tolist() == [12, 25]
    assert "codes" not in b2
    b3 = collate_dialogue(dialogue_rows, tokenizer, cfg, fe)
    assert b3["codes"].shape == (2, 12, 8)


def _frozen_snapshot(m):
    return {n: p.detach().clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_freezing_and_one_step_lowers_loss(make_model, tokenizer, tts_rows, dialogue_rows, stage):
    m = make_model(n_mtp=2)
    cfg = m.cfg
    if stage == 1:
        batch = collate_tts(tts_rows, tokenizer, cfg)
    else:
        batch = collate_dialogue(dialogue_rows, tokenizer, cfg, build_feature_extractor(cfg.audio))
    batch["chunk_causal"] = torch.tensor(False)
    m.set_stage(stage)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    groups = {n.split(".")[0] for n in trainable}
    expected = {1: {"fusion", "talker"}, 2: {"adaptor", "thinker"}, 3: {"adaptor", "thinker", "fusion", "talker"}}
    assert groups == expected[stage]
    assert all("lora_" in n for n in trainable if n.startswith("thinker."))
    if stage > 1:
        assert any("lora_" in n for n in trainable)
    assert len(m.trainable_parameters()) == len(trainable)

    before = _frozen_snapshot(m)
    opt = torch.optim.Adam(m.trainable_parameters(), lr=3e-3)
    m.train()
    out = m(batch, stage)
    keys = set(out)
    assert ("loss/text" in keys) == (stage in (2, 3))
    assert ({f"loss/cb{k}" for k in range(8)} | {"loss/mtp1", "loss/mtp2"} <= keys) == (stage in (1, 3))
    out["loss"].backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        after_loss = m(batch, stage)["loss"]
    assert after_loss < out["loss"].detach()
    for n, p in m.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        if n not in trainable:
            assert not changed, f"frozen {n} changed in stage {stage}"


def test_save_load_round_trip(make_model, tokenizer, dialogue_rows, tmp_path):
    from training.model import VocalNetM2

    m = make_model(n_mtp=1)
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter
        for n, p in m.thinker.lm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    cfg = m.cfg
    batch = collate_dialogue(dialogue_rows, tokenizer, cfg, build_feature_extractor(cfg.audio))
    batch["chunk_causal"] = torch.tensor(True)
    m.eval()
    with torch.no_grad():
        ref = m(batch, 3)
    m.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "thinker_lora", "tokenizer.json"} <= files
    assert (tmp_path / "ckpt" / "thinker_lora" / "adapter_model.safetensors").is_file()
    torch.manual_seed(123)  # a different init must be fully overwritten
    m2 = VocalNetM2.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        got = m2(batch, 3)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)
