import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.tokenization.readers_util import assert_matches, run_reader
from tokenization.sample_corpus import make_libritts_layout, make_ljspeech_layout
from tokenization.readers.registry import list_units, read_input, read_unit
from tokenization.units import ReaderOptions


def test_segment_manifest_spans_start_end_and_offset_duration(span_corpus):
    out = run_reader(str(span_corpus.input), "jsonl")
    assert_matches(out, span_corpus)
    for seg, seconds in span_corpus.durations.items():
        assert out.seconds[seg] == pytest.approx(seconds, abs=2e-3)
    assert out.kept["seg1"].audio.start_s > 0 and out.kept["seg1"].audio.duration_s == span_corpus.durations["seg1"]


def test_csv_and_parquet_manifests_carry_spans_and_meta(span_corpus, tmp_path):
    folder = span_corpus.input.parent
    rows = [json.loads(x) for x in span_corpus.input.read_text().splitlines()][:3]
    csv_lines = ["id,audio_path,text,offset,duration,snr"] + [
        f"{r['id']},{r['audio_path']},\"{r['text']}\",{r.get('offset', r.get('start'))},"
        f"{r.get('duration', round(r.get('end', 0) - r.get('start', 0), 3))},20" for r in rows]
    csv_lines.append("bad,recordings/long.flac,oops,-1,1,20")
    (folder / "segs.csv").write_text("\n".join(csv_lines) + "\n")
    opts = ReaderOptions(unit_bytes=90)  # several ranges; the header is read by each
    recs = [r for u in list_units(str(folder / "segs.csv"), "csv", opts) for r in read_unit(u, opts)]
    assert [r.utt_id for r in recs] == ["seg0", "seg1", "seg2", "bad"] and len(list_units(str(folder / "segs.csv"), "csv", opts)) > 2
    assert recs[0].meta == {"snr": "20"} and recs[1].audio.duration_s == pytest.approx(span_corpus.durations["seg1"])
    assert "`offset` must be a finite number of seconds >= 0" in recs[3].reason
    pq.write_table(pa.Table.from_pylist(rows), folder / "segs.parquet", row_group_size=2)
    units = list_units(str(folder / "segs.parquet"), "parquet", ReaderOptions())
    recs = [r for u in units for r in read_unit(u, ReaderOptions())]
    assert len(units) == 2 and [r.utt_id for r in recs] == ["seg0", "seg1", "seg2"]
    assert recs[2].where.endswith("segs.parquet#row2") and recs[0].audio.duration_s == pytest.approx(span_corpus.durations["seg0"])


def test_jsonl_ranges_locate_bad_lines_and_count_everything(tmp_path):
    lines = [json.dumps({"id": f"u{i}", "audio_path": f"w/{i}.wav", "text": f"t{i}"}) for i in range(20)]
    lines[3], lines[11] = "{not json", '[{"id": "array"}]'
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    opts = ReaderOptions(unit_bytes=128)
    recs = [r for u in list_units(str(path), "jsonl", opts) for r in read_unit(u, opts)]
    assert len(recs) == 20 and [r.utt_id for r in recs if hasattr(r, "audio")] == [f"u{i}" for i in range(20) if i not in (3, 11)]
    offset = len("\n".join(lines[:3])) + 1
    assert recs[3].reason.startswith(f"{path}@byte {offset}: malformed JSON line") and "not a JSON object" in recs[11].reason


def test_paths_escaping_the_folder_are_quarantined_unless_allowed(tmp_path):
    root = tmp_path / "corpus"
    (root / "wavs").mkdir(parents=True)
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    os.symlink(tmp_path / "secret.wav", root / "wavs" / "link.wav")  # inside by name, outside in fact
    os.symlink(root / "wavs", root / "alias")  # a symlink that stays inside is fine
    records = [{"id": "up", "audio_path": "../secret.wav", "text": "a"},
               {"id": "deep", "audio_path": "wavs/../../../../etc/hostname", "text": "b"},
               {"id": "link", "audio_path": "wavs/link.wav", "text": "c"},
               {"id": "ok", "audio_path": "wavs/x.wav", "text": "d"},
               {"id": "alias", "audio_path": "alias/x.wav", "text": "e"},
               {"id": "abs", "audio_path": str(tmp_path / "secret.wav"), "text": "f"},
               {"id": "uri", "audio_path": "s3://bucket/x.wav", "text": "g"}]
    manifest = root / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    recs = list(read_unit(list_units(str(manifest), "jsonl", ReaderOptions())[0], ReaderOptions()))
    escaped = {r.utt_id: r.reason for r in recs if hasattr(r, "reason")}
    assert set(escaped) == {"up", "deep", "link"} and all("escapes" in r and "--allow-outside-paths" in r for r in escaped.values())
    assert [r.audio.path for r in recs if hasattr(r, "audio")] == [str(root / "wavs/x.wav"), str(root / "alias/x.wav"),
                                                                  str(tmp_path / "secret.wav"), "s3://bucket/x.wav"]
    allowed = list(read_unit(list_units(str(manifest), "jsonl", ReaderOptions())[0], ReaderOptions(allow_outside_paths=True)))
    assert all(hasattr(r, "audio") for r in allowed) and allowed[0].audio.path == str(tmp_path / "secret.wav")
    entries, bad = read_input(str(manifest))  # the whole-input read obeys the same rule
    assert {q.utt_id for q in bad} == {"up", "deep", "link"} and len(entries) == 4
    (tmp_path / "elsewhere").mkdir()
    opts = ReaderOptions(audio_root=str(tmp_path / "elsewhere"))
    rooted = list(read_unit(list_units(str(manifest), "jsonl", opts)[0], opts))
    assert rooted[3].audio.path == str(tmp_path / "elsewhere/wavs/x.wav") and "escapes" in rooted[0].reason


def test_ljspeech_and_libritts_layouts_through_units(tmp_path):
    lj = make_ljspeech_layout(tmp_path / "lj", n=3)
    lt = make_libritts_layout(tmp_path / "lt", n=5)
    (lt / "100" / "7" / "100_7_000000.normalized.txt").unlink()
    lj_out, lt_out = run_reader(str(lj), "auto"), run_reader(str(lt), "auto")
    assert [u.fmt for u in lj_out.units] == ["ljspeech"] and sorted(lj_out.kept) == ["LJ001-0001", "LJ001-0002", "LJ001-0003"]
    assert [u.uri.rsplit("/", 2)[-2] for u in lt_out.units] == ["100", "101", "102", "103"]  # one unit per chapter
    assert sorted(lt_out.kept) == ["100_7_000004", "101_7_000001", "102_7_000002", "103_7_000003"]
    assert lt_out.kept["101_7_000001"].speaker == "101"
    assert len(lt_out.quarantined) == 1 and "no transcript 100_7_000000.normalized.txt" in lt_out.quarantined[0].reason


def test_auto_format_detection(webdataset_corpus, hf_corpus, cuts_corpus, span_corpus, tmp_path):
    from tokenization.readers.registry import detect_format

    assert detect_format(str(webdataset_corpus.input)) == "webdataset"  # a folder of tars
    assert detect_format(f"{webdataset_corpus.input}/*.tar") == "webdataset"
    assert detect_format(str(hf_corpus.input)) == "hf" and detect_format(f"{hf_corpus.input}/train-*.parquet") == "hf"
    pq.write_table(pa.Table.from_pylist([{"audio_path": "a.wav", "text": "t"}]), tmp_path / "m.parquet")
    assert detect_format(str(tmp_path / "m.parquet")) == "parquet"
    assert detect_format(str(span_corpus.input)) == "jsonl" and detect_format(str(cuts_corpus.input) + ".gz") == "lhotse"


def test_input_mistakes_are_user_errors_naming_the_input(tmp_path):
    from tokenization.errors import UserError

    with pytest.raises(UserError, match=f"--input {tmp_path}/nope: no such file or folder"):
        list_units(str(tmp_path / "nope"), "webdataset", ReaderOptions())
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UserError, match=r"--input .*: no \.tar/\.tar\.gz/\.tgz files there"):
        list_units(str(tmp_path), "webdataset", ReaderOptions())
    with pytest.raises(UserError, match="no .parquet files there"):
        list_units(f"{tmp_path}/*.parquet", "hf", ReaderOptions())
    with pytest.raises(UserError, match="--format tarball: expected one of auto, csv, hf, jsonl, lhotse, libritts, ljspeech, parquet, webdataset$"):
        list_units(str(tmp_path), "tarball", ReaderOptions())


def test_whole_file_listing_keeps_spans(span_corpus):
    entries, bad = read_input(str(span_corpus.input))
    assert len(entries) + len(bad) == span_corpus.n_rows
    seg1 = next(e for e in entries if e.utt_id == "seg1")
    assert seg1.audio.start_s > 0 and seg1.audio.duration_s == span_corpus.durations["seg1"]
