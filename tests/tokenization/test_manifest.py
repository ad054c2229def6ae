import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenization.errors import UserError
from tokenization.readers.base import stable_utt_id
from tokenization.readers.registry import read_input
from tokenization.sample_corpus import make_libritts_layout, make_ljspeech_layout


def test_jsonl_relative_paths_resolve_against_manifest_folder(tts_sample):
    entries, bad = read_input(str(tts_sample))
    n_in = len(entries) + len(bad)
    assert (len(entries), len(bad), n_in) == (36, 0, 36)
    assert entries[0].audio.path == str(tts_sample.parent / "wavs/spk_us_m/spk_us_m_000.wav")
    assert {e.speaker for e in entries} == {"spk_us_m", "spk_us_f", "spk_gb_m", "spk_sc_f"}


def test_bad_manifest_lines_are_quarantined_with_line_and_reason(tmp_path):
    lines = [
        json.dumps({"id": "a", "audio_path": "a.wav", "text": "hello"}).encode(),
        b"{not json",
        json.dumps({"id": "b", "audio_path": "b.wav", "text": "  "}).encode(),
        json.dumps({"id": "a", "audio_path": "c.wav", "text": "again"}).encode(),
        '{"id": "d", "audio_path": "d.wav", "text": "caf\u00e9"}'.encode("latin-1"),
        json.dumps({"id": "e", "text": "no audio"}).encode(),
        json.dumps({"audio_path": "f.wav", "text": "no id, hashed"}).encode(),
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    entries, bad = read_input(str(manifest))
    n_in = len(entries) + len(bad)
    assert n_in == 7 and len(entries) + len(bad) == n_in
    assert [e.utt_id for e in entries] == ["a", stable_utt_id("m", "f.wav")]
    reasons = [q.reason for q in bad]
    assert any(r.startswith(f"{manifest}:2: malformed JSON line") for r in reasons)
    assert any(r.startswith(f"{manifest}:3: empty or missing transcript") for r in reasons)
    assert any(r.startswith(f"{manifest}:4: duplicate id 'a'") for r in reasons)
    assert any(r.startswith(f"{manifest}:5: line is not UTF-8") for r in reasons)
    assert any(r.startswith(f"{manifest}:6: no audio_path") for r in reasons)
    assert all(q.stage == "manifest" and q.file == str(manifest) for q in bad)


def test_csv_and_parquet_manifests(tmp_path):
    rows = [{"audio_path": "x/1.wav", "text": "one", "speaker": "s1"}, {"audio_path": "x/2.wav", "text": "two", "speaker": "s2"}]
    (tmp_path / "m.csv").write_text("audio_path,text,speaker\nx/1.wav,one,s1\nx/2.wav,two,s2\nx/3.wav,three\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    csv_entries, csv_bad = read_input(str(tmp_path / "m.csv"))
    n = len(csv_entries) + len(csv_bad)
    assert n == 3 and [e.text for e in csv_entries] == ["one", "two"] and "malformed CSV line" in csv_bad[0].reason
    pq_entries, pq_bad = read_input(str(tmp_path / "m.parquet"))
    n = len(pq_entries) + len(pq_bad)
    assert n == 2 and not pq_bad and [e.speaker for e in pq_entries] == ["s1", "s2"]
    assert pq_entries[0].audio.path == str(tmp_path / "x/1.wav")


def test_ljspeech_and_libritts_layouts(tmp_path):
    lj = make_ljspeech_layout(tmp_path / "lj", n=4)
    entries, bad = read_input(str(lj))
    n = len(entries) + len(bad)
    assert (len(entries), len(bad), n) == (4, 0, 4)
    assert entries[0].utt_id == "LJ001-0001" and entries[0].audio.path.endswith("wavs/LJ001-0001.wav")

    lt = make_libritts_layout(tmp_path / "lt", n=4)
    (lt / "100" / "7" / "100_7_000000.normalized.txt").unlink()  # transcript missing for one clip
    entries, bad = read_input(str(lt))
    n = len(entries) + len(bad)
    assert (len(entries), len(bad), n) == (3, 1, 4)
    assert "no transcript" in bad[0].reason and "100_7_000000.wav" in bad[0].reason
    assert {e.speaker for e in entries} == {"101", "102", "103"}


def test_unknown_input_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_input(str(tmp_path / "missing.jsonl"))
