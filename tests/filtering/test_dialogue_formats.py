"""Dialogue layouts beyond native/LLaMA-Omni: HF Parquet with embedded turn audio, InstructS2S; hostile manifests."""

import json
import os

import pytest

from tokenization.readers.dialogue import read_dialogue_unit
from tokenization.readers.registry import list_units, read_dialogues
from tokenization.units import DialogueSpec
from filtering.filter_job import load_dialogue
from tests.corpora import make_hf_dialogues, make_instruct_s2s
from tokenization.dialogue_schema import ASSISTANT, USER
from tokenization.units import ReaderOptions


@pytest.fixture(scope="module")
def speech_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


def _check(specs, bad, corpus) -> None:
    assert {s.dialogue_id: s.turns[-1].text for s in specs} == corpus.good
    for name, fragment in corpus.bad.items():
        hits = [q for q in bad if q.utt_id == name]
        assert len(hits) == 1 and fragment in hits[0].reason, (name, [q.reason for q in bad])
    assert len(specs) + len(bad) == corpus.n_rows


def test_hf_dialogue_parquet_with_embedded_audio(tmp_path, speech_cache):
    corpus = make_hf_dialogues(tmp_path / "hf", speech_cache)
    units = list_units(str(corpus.input), "dialogue", ReaderOptions())
    assert [(u.uri.rsplit("/", 1)[-1], u.part) for u in units] == [
        ("qa.parquet", 0), ("turns.parquet", 0), ("turns.parquet", 1), ("voiceassistant.parquet", 0)]
    specs, bad = read_dialogues(str(corpus.input))
    _check(specs, bad, corpus)
    units_only = next(q for q in bad if q.utt_id == "train-1-0")
    assert "answer_snac" in units_only.reason and units_only.reason.startswith(f"{corpus.input}/voiceassistant.parquet#row1: ")
    assert "\"question_audio\": {\"bytes\": null, \"path\": \"q1.flac\"}" in units_only.line  # binary audio is not copied out
    for spec in specs:  # the specs cross the task boundary as JSON and load with their embedded audio
        spec = DialogueSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        row = load_dialogue(spec, "run", 60.0)
        assert [t.role for t in row.turns] == [USER, ASSISTANT] and all(1.5 < t.duration_s < 6 for t in row.turns)


def test_instruct_s2s_layout(tmp_path, speech_cache):
    corpus = make_instruct_s2s(tmp_path / "s2s", speech_cache)
    specs, bad = read_dialogues(str(corpus.input))
    _check(specs, bad, corpus)
    multi = next(s for s in specs if s.dialogue_id == "s2s_1")
    assert [t.role for t in multi.turns] == [USER, ASSISTANT, USER, ASSISTANT]
    assert not multi.turns[0].text.startswith("<speech>") and multi.turns[1].audio_path == str(corpus.input.parent / "wavs/c2.wav")
    assert load_dialogue(multi, "run", 60.0).turns[3].duration_s > 1.0
    allowed, bad = read_dialogues(str(corpus.input), opts=ReaderOptions(allow_outside_paths=True))
    assert "s2s_up" in {s.dialogue_id for s in allowed} and len(bad) == 1


def test_json_array_on_the_first_line_of_a_jsonl_is_quarantined_not_a_crash(tmp_path):
    good = {"id": "ok", "turns": [{"role": "user", "text": "hi", "audio_path": "u.wav"},
                                   {"role": "assistant", "text": "hello", "audio_path": "a.wav"}]}
    lines = [json.dumps([good]), json.dumps({**good, "id": "ok2"}), json.dumps([1, 2])]
    for name in ("m.jsonl", "m.json"):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        specs, bad = read_dialogues(str(tmp_path / name))
        assert [s.dialogue_id for s in specs] == ["ok2"], name
        assert len(bad) == 2 and all("record is not an object" in q.reason for q in bad)
        assert bad[0].reason.startswith(f"{tmp_path / name}:1: ") and bad[1].reason.startswith(f"{tmp_path / name}:3: ")
    (tmp_path / "list.json").write_text(json.dumps([good, {**good, "id": "ok3"}], indent=2))  # a real JSON list
    specs, bad = read_dialogues(str(tmp_path / "list.json"))
    assert [s.dialogue_id for s in specs] == ["ok", "ok3"] and not bad
    (tmp_path / "broken.json").write_text(json.dumps([good, good], indent=2)[:-5])
    specs, bad = read_dialogues(str(tmp_path / "broken.json"))
    assert not specs and len(bad) == 1 and "not JSON" in bad[0].reason  # one row for the file, not one per line


def test_dialogue_paths_escaping_the_folder_are_quarantined(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (tmp_path / "x.wav").write_bytes(b"")
    os.symlink(tmp_path / "x.wav", root / "link.wav")

    def rec(did, user, asst):
        return {"id": did, "turns": [{"role": "user", "text": "q", "audio_path": user},
                                     {"role": "assistant", "text": "a", "audio_path": asst}]}

    lines = [rec("up", "../x.wav", "a.wav"), rec("deep", "u.wav", "../../../etc/hostname"), rec("link", "link.wav", "a.wav"),
             rec("ok", "u.wav", "sub/../a.wav"), rec("abs", str(tmp_path / "x.wav"), "s3://b/a.wav")]
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    specs, bad = read_dialogues(str(root / "m.jsonl"))
    assert [s.dialogue_id for s in specs] == ["ok", "abs"] and {q.utt_id for q in bad} == {"up", "deep", "link"}
    assert all("escapes" in q.reason and "--allow-outside-paths" in q.reason for q in bad)
    assert specs[0].turns[1].audio_path == str(root / "a.wav")
    opts = ReaderOptions(unit_bytes=100)  # byte ranges give the same records
    ranged = [r for u in list_units(str(root / "m.jsonl"), "dialogue", opts) for r in read_dialogue_unit(u, opts)]
    assert len(list_units(str(root / "m.jsonl"), "dialogue", opts)) > 3
    assert [getattr(r, "dialogue_id", None) or r.utt_id for r in ranged] == ["up", "deep", "link", "ok", "abs"]
