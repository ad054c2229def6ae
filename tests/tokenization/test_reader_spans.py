import gzip
import json

import pytest
import soundfile as sf

from tests.corpora import make_lhotse_cuts
from tests.tokenization.readers_util import assert_matches, run_reader
from tokenization.audio import BadAudio, read_span
from tokenization.readers.registry import list_units, read_unit
from tokenization.units import AudioRef, ReaderOptions


def test_lhotse_cuts_read_only_their_span(cuts_corpus):
    out = run_reader(str(cuts_corpus.input), "lhotse")
    assert_matches(out, cuts_corpus)
    for cut_id, seconds in cuts_corpus.durations.items():
        assert out.seconds[cut_id] == pytest.approx(seconds, abs=1 / 22050 + 1e-3)  # duration_s is the cut's
    cut1 = out.kept["cut1"]  # text from supervisions[0].custom.texts[0]
    assert cut1.speaker == "spk1" and cut1.language == "en" and cut1.audio.start_s > 0
    assert cut1.audio.path == str(cuts_corpus.input.parent / "recordings/long.flac")
    assert "past the end of the recording" in out.load_bad["past_end"]


def test_span_decode_equals_the_slice_of_a_whole_decode(cuts_corpus):
    long = cuts_corpus.input.parent / "recordings/long.flac"
    whole, rate = sf.read(long, dtype="float32")
    samples, r = read_span(AudioRef(path=str(long), start_s=1.0, duration_s=0.5))
    assert r == rate and (samples == whole[rate: rate + rate // 2]).all()
    embedded, _ = read_span(AudioRef(data=long.read_bytes(), start_s=1.0, duration_s=0.5))
    assert (embedded == samples).all()
    with pytest.raises(BadAudio, match="empty or negative span"):
        read_span(AudioRef(path=str(long), start_s=1.0, duration_s=0.0))


def test_gz_cuts_and_audio_root(cuts_corpus, tmp_path, speech_cache):
    gz = make_lhotse_cuts(tmp_path / "gz", speech_cache, gz=True)
    out = run_reader(str(gz.input), "auto")
    assert out.units[0].fmt == "lhotse" and set(out.kept) == set(gz.good)
    moved = tmp_path / "elsewhere" / "cuts.jsonl"  # cuts apart from their audio: --audio-root says where
    moved.parent.mkdir()
    moved.write_bytes(gzip.decompress(gz.input.read_bytes()))
    opts = ReaderOptions(audio_root=str(gz.input.parent))
    recs = [r for u in list_units(str(moved), "lhotse", opts) for r in read_unit(u, opts)]
    assert recs[0].audio.path == str(gz.input.parent / "recordings/long.flac")


def test_byte_ranges_own_each_line_exactly_once(cuts_corpus):
    """Every cut lands in exactly one range, whatever the cut points: ranges of 1..N bytes."""
    all_ids = [json.loads(x)["id"] for x in cuts_corpus.input.read_text().splitlines()]
    size = cuts_corpus.input.stat().st_size
    for unit_bytes in (1, 7, 100, 1000, 1333, size - 1, size, size + 1):
        opts = ReaderOptions(unit_bytes=unit_bytes)
        units = list_units(str(cuts_corpus.input), "lhotse", opts)
        assert len(units) == max(1, -(-size // unit_bytes)) if unit_bytes < size else len(units) == 1
        seen = [r.utt_id for u in units for r in read_unit(u, opts)]
        assert seen == all_ids, unit_bytes
