import io
import json
import tarfile

from tests.corpora import encode, speech
from tests.tokenization.readers_util import assert_matches, run_reader
from tokenization.readers.registry import list_units, read_unit
from tokenization.units import ReaderOptions, Utterance


def test_emilia_tars_read_by_key_with_meta_and_every_bad_kind_quarantined(webdataset_corpus):
    out = run_reader(str(webdataset_corpus.input), "webdataset")
    assert [u.uri.rsplit("/", 1)[-1] for u in out.units] == ["EN-B000000.tar", "EN-B000001.tar", "EN-B000002.tar"]
    assert_matches(out, webdataset_corpus)
    first = out.kept["EN_B000000_S00000_W000000"]
    assert first.text == first.text.strip() and first.speaker == "EN_B000000_S00000" and first.language == "en"
    assert first.meta == {"wav": "EN_B000000_S00000_W000000.mp3", "duration": 1.0, "dnsmos": 3.25}
    assert all(1.5 < s < 6.0 for s in out.seconds.values())  # real speech decoded from MP3/FLAC (shortest: 1.9 s)
    txt_sample = out.kept["sub/EN_B000001_S00001_W000001"]  # no JSON: key as id, .txt as text
    assert txt_sample.meta is None and not txt_sample.text.endswith("\n")
    broken = [q for q in out.quarantined if q.file.endswith("EN-B000002.tar")]
    assert len(broken) == 1 and "EN_B000002_S00002_W000002.mp3" in broken[0].reason


def test_glob_and_single_tar_inputs_list_the_same_units(webdataset_corpus):
    root = webdataset_corpus.input
    by_glob = list_units(f"{root}/EN-B00000[01].tar", "webdataset", ReaderOptions())
    assert [u.uri for u in by_glob] == [str(root / "EN-B000000.tar"), str(root / "EN-B000001.tar")]
    assert [u.index for u in by_glob] == [0, 1] and all(u.size > 0 and u.version for u in by_glob)
    single = list_units(str(root / "EN-B000001.tar"), "auto", ReaderOptions())
    assert single[0].uri == by_glob[1].uri and single[0].fmt == "webdataset"


def _sample_tar(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_gz_streams_and_a_garbled_header_is_one_quarantine_row(tmp_path, speech_cache):
    text, samples, rate = speech(1, speech_cache)[0]
    members = [(f"k{i}.wav", encode(samples, rate, "WAV")) for i in range(3)]
    members = [m for i, m in enumerate(members) for m in (m, (f"k{i}.txt", text.encode()))]
    (tmp_path / "ok.tar.gz").write_bytes(_sample_tar(members, "w:gz"))
    raw = bytearray(_sample_tar(members))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tf:
        third = tf.getmembers()[4]  # k2.wav's header
    raw[third.offset: third.offset + 100] = b"\xff" * 100  # bad checksum: tarfile would stop silently
    (tmp_path / "garbled.tar").write_bytes(bytes(raw))
    gz = [r for u in list_units(str(tmp_path / "ok.tar.gz"), "webdataset", ReaderOptions()) for r in read_unit(u, ReaderOptions())]
    assert [r.utt_id for r in gz] == ["k0", "k1", "k2"] and all(isinstance(r, Utterance) for r in gz)
    garbled = list(read_unit(list_units(str(tmp_path / "garbled.tar"), "webdataset", ReaderOptions())[0], ReaderOptions()))
    assert [r.utt_id for r in garbled[:2]] == ["k0", "k1"] and isinstance(garbled[0], Utterance)
    assert len(garbled) == 3 and "end-of-archive" in garbled[2].reason and str(tmp_path / "garbled.tar") == garbled[2].file


def test_sidecar_audio_path_resolves_next_to_the_tar_and_may_not_escape(tmp_path, speech_cache):
    text, samples, rate = speech(1, speech_cache)[0]
    (tmp_path / "wds").mkdir()
    (tmp_path / "wds" / "side.wav").write_bytes(encode(samples, rate, "WAV"))
    (tmp_path / "outside.wav").write_bytes(encode(samples, rate, "WAV"))
    tar = tmp_path / "wds" / "s.tar"
    tar.write_bytes(_sample_tar([("a.json", json.dumps({"text": text, "audio_path": "side.wav"}).encode()),
                                 ("b.json", json.dumps({"text": text, "audio_path": "../outside.wav"}).encode())]))
    recs = list(read_unit(list_units(str(tar), "webdataset", ReaderOptions())[0], ReaderOptions()))
    assert recs[0].audio.path == str(tmp_path / "wds" / "side.wav")
    assert recs[1].utt_id == "b" and "escapes" in recs[1].reason and "--allow-outside-paths" in recs[1].reason
    allowed = list(read_unit(list_units(str(tar), "webdataset", ReaderOptions())[0], ReaderOptions(allow_outside_paths=True)))
    assert allowed[1].audio.path == str(tmp_path / "outside.wav")
