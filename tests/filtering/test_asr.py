"""Real Whisper tiny.en on espeak speech, through both backends (no Ray)."""

import copy

import numpy as np
import torch

from filtering.asr import shipped_tiny_en
from filtering.ct2_to_openai_whisper import ct2_to_state_dict, read_ct2_variables
from filtering.filter_job import ScoreBatch
from filtering.rules import Rules, reason_code
from filtering.sample_dialogues import expected_outcomes
from filtering.wer import score
from tokenization.audio import load_audio
from tokenization.dialogue_schema import USER


def test_converted_checkpoint_matches_the_ct2_weights(openai_checkpoint):
    ckpt = torch.load(openai_checkpoint, weights_only=True)
    assert ckpt["dims"] == {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
                            "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}
    spec, v = read_ct2_variables(shipped_tiny_en() + "/model.bin")
    assert spec == "WhisperSpec"
    sd = ckpt["model_state_dict"]
    q, k, _ = np.split(v["decoder/layer_2/self_attention/linear_0/weight"], 3)
    assert np.array_equal(sd["decoder.blocks.2.attn.key.weight"].numpy(), k.astype(np.float32))
    assert np.array_equal(sd["encoder.blocks.0.mlp.2.weight"].numpy(), v["encoder/layer_0/ffn/linear_1/weight"].astype(np.float32))
    assert ct2_to_state_dict(v)[1].keys() == sd.keys()


def test_openai_whisper_with_converted_weights_transcribes_espeak(openai_asr, faster_asr, dialogue_sample):
    wavs = dialogue_sample.parent / "wavs"
    clips = {"d05_a0": "Walk straight ahead and turn left at the bank.",
             "d07_a0": "The house is about one hundred years old.",
             "d02_a0": "The library is next to the post office."}
    audios = [load_audio(str(wavs / f"{name}.wav"), 16000) for name in clips]
    for asr in (openai_asr, faster_asr):
        hyps = asr.transcribe(audios)
        assert [score(text, h).wer for text, h in zip(clips.values(), hyps)] == [0.0, 0.0, 0.0], (asr.name, hyps)
    assert openai_asr.name == "openai-whisper:tiny_en:fp32" and faster_asr.name == "faster-whisper:tiny.en:int8"
    # digital silence and faint noise are no speech (Whisper's no-speech rule): no text, and no crash of the batch
    noise = np.random.default_rng(0).normal(0, 1e-3, 24000).astype(np.float32)
    for asr in (openai_asr, faster_asr):
        assert asr.transcribe([np.zeros(16000, np.float32), noise, audios[0]])[:2] == ["", ""], asr.name


def _decisions(asr, records):
    out = ScoreBatch(asr, Rules()).score(copy.deepcopy(records))
    return {r.row.dialogue_id: r.row for r in out if r.status == "ok"}, out


def test_sample_keep_reject_by_real_asr_and_backends_agree(faster_asr, openai_asr, loaded_records):
    expected = expected_outcomes()
    fw, records = _decisions(faster_asr, loaded_records)
    ow, _ = _decisions(openai_asr, loaded_records)
    quarantined = {r.id for r in records if r.status != "ok"}
    assert quarantined == {d for d, o in expected.items() if o == "quarantine"}
    for rows in (fw, ow):
        assert {d: ("keep" if r.keep else "reject") for d, r in rows.items()} == {d: o for d, o in expected.items() if o != "quarantine"}
        for did in ("m01_other_sentence", "m02_truncated", "m04_second_turn"):
            assert reason_code(rows[did].reject_reason) == "wer", rows[did].reject_reason
        # the silent answer is no speech through either backend, not a hallucinated "you" (a wer reject)
        assert reason_code(rows["m03_silence"].reject_reason) == "empty_hypothesis", rows["m03_silence"].reject_reason
        assert "(turn 3)" in rows["m04_second_turn"].reject_reason
        kept = [r for r in rows.values() if r.keep]
        assert all(r.wer <= 0.1 and r.asr_model for r in kept)
        user_turns = [t for r in rows.values() for t in r.turns if t.role == USER]
        assert all(t.wer is None and t.asr_hyp is None for t in user_turns)  # only assistant speech is judged
    assert {d: r.keep for d, r in fw.items()} == {d: r.keep for d, r in ow.items()}
    assert fw["m02_truncated"].turns[1].n_del > 0
