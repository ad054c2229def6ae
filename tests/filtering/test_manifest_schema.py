"""Dialogue manifests (both layouts, malformed records) and the dialogue-shard schema."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filtering.asr import SAMPLE_RATE
from tokenization.readers.registry import read_dialogues
from filtering.sample_dialogues import expected_outcomes
from tokenization.dialogue_schema import (ASSISTANT, USER, DialogueRow, DialogueTurn, ScoredTTSRow, dialogue_rows_to_table, dialogue_schema,
                                      pcm_to_flac, scored_tts_schema)
from tokenization.schema import TokenRow, rows_to_table, table_to_parquet_bytes, token_schema


def test_sample_reads_the_same_in_both_layouts(dialogue_sample):
    native, bad1 = read_dialogues(str(dialogue_sample))
    omni, bad2 = read_dialogues(str(dialogue_sample.parent / "dialogues_llama_omni.json"))
    assert not bad1 and not bad2
    assert {d.dialogue_id for d in native} == set(expected_outcomes())
    assert [(d.dialogue_id, d.turns) for d in native] == [(d.dialogue_id, d.turns) for d in omni]
    # relative paths resolve against the manifest's folder
    assert all(t.audio_path.startswith(str(dialogue_sample.parent)) for d in native for t in d.turns)
    assert max(len(d.turns) for d in native) == 4  # multi-turn dialogues


def test_malformed_records_are_quarantined_with_reasons(tmp_path):
    good = {"id": "ok", "turns": [{"role": "user", "text": "hi", "audio_path": "u.wav"},
                                   {"role": "assistant", "text": "hello", "audio_path": "a.wav"}]}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": ""}),
        json.dumps(good),  # duplicate id
        json.dumps({"id": "r", "turns": [{"role": "robot", "text": "x", "audio_path": "a.wav"}]}),
        json.dumps({"id": "u", "turns": [{"role": "user", "text": "x", "audio_path": "a.wav"}]}),
        json.dumps({"id": "t", "turns": [{"role": "assistant", "text": "", "audio_path": "a.wav"}]}),
        json.dumps({"id": "p", "turns": [{"role": "assistant", "text": "x"}]}),
        json.dumps({"id": "o", "speech": "u.wav", "conversations": [{"from": "human", "value": "<speech>"}, {"from": "gpt", "value": "hi"}]}),
    ]
    m = tmp_path / "m.jsonl"
    m.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "\xff"}\n')
    specs, bad = read_dialogues(str(m))
    assert [s.dialogue_id for s in specs] == ["ok"]
    reasons = [q.reason for q in bad]
    for expected in ("not JSON", "missing id", "duplicate id", "unknown role", "no assistant turn", "empty assistant text",
                     "missing audio path", "no audio", "non-UTF-8"):
        assert any(expected in r for r in reasons), (expected, reasons)
    assert len(specs) + len(bad) == len(lines) + 1  # nothing dropped silently
    assert all(q.stage == "manifest" for q in bad)


def test_dialogue_schema_roundtrip_and_contract():
    codes = np.arange(25 * 8, dtype=np.uint16).reshape(25, 8)
    wav = np.sin(np.linspace(0, 100, SAMPLE_RATE)).astype(np.float32) * 0.5
    row = DialogueRow("d1", "src", "en", "spk", [
        DialogueTurn(USER, "hi", pcm_to_flac(wav, SAMPLE_RATE), SAMPLE_RATE, 1.0),
        DialogueTurn(ASSISTANT, "hello", pcm_to_flac(wav, SAMPLE_RATE), SAMPLE_RATE, 1.0, codes, 25, "hello", "fw", "hello",
                     0.0, 0.0, 1, 0, 0, 0),
    ], keep=True, audio_sha1="x", run_id="r")
    row.aggregate()
    assert (row.wer, row.n_ref_words, row.asr_model) == (0.0, 1, "fw")
    table = dialogue_rows_to_table([row])
    assert table.schema.equals(dialogue_schema())
    back = pq.read_table(pa.BufferReader(table_to_parquet_bytes(table))).to_pylist()[0]
    again = DialogueRow.from_dict(back)
    assert np.array_equal(again.turns[1].codes, codes) and again.turns[0].codes is None
    samples, rate = again.turns[0].audio()
    assert rate == SAMPLE_RATE and np.abs(samples - wav).max() < 1e-3
    t = dialogue_schema().field("turns").type.value_type
    assert t.field("codes").type == pa.list_(pa.list_(pa.uint16(), 8))
    assert [f.name for f in t] == ["role", "text", "audio_flac", "sample_rate", "duration_s", "codes", "n_frames", "asr_hyp",
                                   "asr_model", "text_ref_norm", "wer", "cer", "n_ref_words", "n_sub", "n_del", "n_ins",
                                   # schema 3: the quality scores (`--quality dnsmos,vad`), null when not computed
                                   "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808", "speech_ratio",
                                   "lead_silence_s", "trail_silence_s"]


def test_scored_tts_row_is_the_token_row_then_its_score_and_verdict():
    token = TokenRow("u1", "src", "spk", "en", "hello there", 2.0, 25, np.arange(200, dtype=np.uint16).reshape(25, 8),
                     "0" * 40, "run", "valid", '{"dnsmos":3.1}')
    row = ScoredTTSRow.from_dict(rows_to_table([token]).to_pylist()[0])  # what the filter job's load step does
    assert row.wer is None and not row.keep and np.array_equal(row.codes, token.codes)
    row.asr_hyp, row.wer, row.n_ref_words, row.keep, row.reject_reason = "hello there", 0.0, 2, False, "wer: 0.5 > 0.3"
    table = rows_to_table([row], row_cls=ScoredTTSRow)
    names = scored_tts_schema().names
    assert table.schema.equals(scored_tts_schema()) and names[: len(token_schema().names)] == token_schema().names
    turn = dialogue_schema().field("turns").type.value_type.names  # a dialogue turn is scored with the same columns
    assert names[len(token_schema().names):] == turn[turn.index("asr_hyp"):] + ["keep", "reject_reason"]
    back = ScoredTTSRow.from_dict(pq.read_table(pa.BufferReader(table_to_parquet_bytes(table))).to_pylist()[0])
    assert np.array_equal(back.codes, token.codes) and back.split == "valid" and back.meta == token.meta
    assert (back.wer, back.n_ref_words, back.keep, back.reject_reason) == (0.0, 2, False, "wer: 0.5 > 0.3")
