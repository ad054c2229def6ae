import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.tokenization.readers_util import assert_matches, run_reader
from tokenization.errors import UserError
from tokenization.readers.base import stable_utt_id
from tokenization.readers.registry import list_units, read_unit
from tokenization.units import ReaderOptions


def test_hf_parquet_row_groups_structs_and_bad_rows(hf_corpus):
    out = run_reader(str(hf_corpus.input), "hf")
    assert [(u.uri.rsplit("/", 1)[-1], u.part) for u in out.units] == [
        ("train-00000-of-00002.parquet", 0), ("train-00000-of-00002.parquet", 1), ("train-00000-of-00002.parquet", 2),
        ("train-00001-of-00002.parquet", 0), ("train-00001-of-00002.parquet", 1)]
    assert_matches(out, hf_corpus)
    row1 = out.kept[stable_utt_id("data", "train-00000-of-00002.parquet", "row1")]  # WAV bytes
    assert row1.speaker == "spk1" and row1.meta == {"chapter_id": 8} and row1.audio.data is not None
    arr = out.kept["arr1"]  # {array, sampling_rate}: taken as is; `sentence`/`client_id` auto-detected
    assert arr.audio.array is not None and arr.audio.sample_rate == 22050 and arr.speaker == "cv_speaker"
    assert all(2.0 < s < 6.0 for s in out.seconds.values())


def test_hf_glob_and_explicit_columns(hf_corpus, tmp_path):
    units = list_units(f"{hf_corpus.input}/train-00001-*.parquet", "hf", ReaderOptions())
    assert len(units) == 2 and all(u.fmt == "hf" for u in units)
    opts = ReaderOptions(text_column="sentence", speaker_column="id", id_column="client_id")
    recs = [r for u in units for r in read_unit(u, opts)]
    # one unit per row group: a duplicate across units is the engine's to resolve, the reader keeps both
    assert [(r.utt_id, r.speaker, r.text[:3]) for r in recs] == [("cv_speaker", "arr0", "Low"), ("cv_speaker", "arr1", "Eve")]
    with pytest.raises(UserError, match="--text-column nope: no such column in .*train-00000.*columns: audio, text_normalized"):
        list_units(str(hf_corpus.input), "hf", ReaderOptions(text_column="nope"))
    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="fake.parquet: not a Parquet file"):
        list_units(str(tmp_path / "fake.parquet"), "hf", ReaderOptions())


def test_hf_audio_path_without_bytes_obeys_the_folder_rule(tmp_path):
    rows = [{"audio": {"bytes": None, "path": "clips/a.wav"}, "text": "inside"},
            {"audio": {"bytes": None, "path": "../../etc/hostname"}, "text": "outside"},
            {"audio": {"bytes": None, "path": "/abs/b.wav"}, "text": "absolute"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    recs = list(read_unit(list_units(str(tmp_path / "p.parquet"), "hf", ReaderOptions())[0], ReaderOptions()))
    assert recs[0].audio.path == str(tmp_path / "clips/a.wav") and recs[2].audio.path == "/abs/b.wav"
    assert "escapes" in recs[1].reason and recs[1].file == str(tmp_path / "p.parquet") and "#row1" in recs[1].reason


def test_utterances_cross_the_task_boundary_as_json(hf_corpus, cuts_corpus):
    """Embedded bytes, sample arrays, spans and meta survive Utterance.to_dict -> JSON -> from_dict."""
    import json

    import numpy as np

    from tokenization.audio import read_ref
    from tokenization.units import Utterance

    recs = [r for u in list_units(str(hf_corpus.input), "hf", ReaderOptions()) for r in read_unit(u, ReaderOptions())
            if isinstance(r, Utterance)][:1]
    recs += [r for u in list_units(f"{hf_corpus.input}/train-00001-*.parquet", "hf", ReaderOptions()) for r in read_unit(u, ReaderOptions())][:1]
    recs += [next(r for u in list_units(str(cuts_corpus.input), "lhotse", ReaderOptions()) for r in read_unit(u, ReaderOptions()))]
    for utt in recs:
        back = Utterance.from_dict(json.loads(json.dumps(utt.to_dict())))
        assert (back.utt_id, back.text, back.meta, back.audio.start_s, back.audio.duration_s) == \
               (utt.utt_id, utt.text, utt.meta, utt.audio.start_s, utt.audio.duration_s)
        assert np.array_equal(read_ref(back.audio)[0], read_ref(utt.audio)[0])
