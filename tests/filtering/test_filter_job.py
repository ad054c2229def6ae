"""End-to-end filter job (Ray Data, real tiny.en, tiny codec): shards, counts, resume after kill, TTS shards."""

import json
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from filtering.asr import load_asr
from filtering.filter_job import filter_job
from filtering.quality import QUALITY_COLUMNS
from filtering.rules import Rules
from filtering.sample_dialogues import NOISY_ID, RULES_FILE, expected_outcomes
from tests.filtering.conftest import run_module
from tests.jobs import TINY_EN_MODELS
from tokenization.dialogue_schema import USER, DialogueRow, dialogue_schema, scored_tts_schema
from tokenization.engine.local_run import run_local
from tokenization.readers.registry import list_units
from tokenization.units import ReaderOptions

pytestmark = pytest.mark.slow


def _rows(folder):
    return pads.dataset(str(folder), format="parquet").to_table().to_pylist()


def test_counts_add_up_and_rows_land_where_expected(filter_out):
    out, summary = filter_out
    expected = expected_outcomes(quality=True)
    assert summary["rows_in"] == len(expected) == summary["kept"] + summary["rejected"] + summary["quarantined"]
    kept, rejects, quarantine = _rows(out / "kept"), _rows(out / "rejects"), _rows(out / "quarantine")
    assert {r["dialogue_id"] for r in kept} == {d for d, o in expected.items() if o == "keep"}
    assert {r["dialogue_id"] for r in rejects} == {d for d, o in expected.items() if o == "reject"}
    assert {r["utt_id"] for r in quarantine} == {d for d, o in expected.items() if o == "quarantine"}
    assert all(r["stage"] == "load" and "zero-byte" in r["reason"] for r in quarantine)
    assert all(r["keep"] and r["reject_reason"] == "" for r in kept)
    assert all(not r["keep"] and r["reject_reason"] for r in rejects)
    m = json.loads((out / "_manifest.json").read_text())
    assert m["counts"]["in"] == len(expected) and "error" not in m["counts"]
    assert m["counts"]["kept"] == len(kept) and m["counts"]["rejected"] == len(rejects)
    assert set(m["reject_reasons"]) <= {"wer", "empty_hypothesis", "speech_ratio", "dnsmos"}
    assert sum(m["reject_reasons"].values()) == len(rejects)
    noisy = next(r for r in rejects if r["dialogue_id"] == NOISY_ID)
    assert noisy["reject_reason"].startswith("dnsmos: ovrl ") and noisy["reject_reason"].endswith("(turn 1)")
    assert noisy["wer"] <= 0.1  # its transcript was right: only the quality rule caught it


def test_kept_dialogue_shards_hold_audio_texts_and_codes(filter_out):
    out, _ = filter_out
    files = sorted((out / "kept").glob("*.parquet"))
    assert pq.read_schema(files[0]).remove_metadata().equals(dialogue_schema())
    meta = pq.read_metadata(files[0]).metadata
    assert meta[b"codec_name"] and meta[b"n_codebooks"] == b"8"
    rows = list(map(DialogueRow.from_dict, _rows(out / "kept")))
    assert len({r.asr_model for r in rows}) == 1 and rows[0].asr_model in TINY_EN_MODELS  # one backend for the whole job
    assert rows[0].asr_model.startswith(meta[b"asr"].decode())  # the driver's resolved spec, recorded in the file
    for r in rows:
        assert r.wer <= 0.1 and r.run_id and r.audio_sha1
        for i, t in enumerate(r.turns):
            samples, rate = t.audio()
            assert rate == t.sample_rate and abs(len(samples) / rate - t.duration_s) < 1e-3
            if t.role == USER:
                assert t.codes is None and t.wer is None and t.dnsmos_ovrl is None
            else:
                assert r.turns[i - 1].role == USER  # stage 2/3 pairs: user turn -> next assistant turn
                assert t.codes.shape == (t.n_frames, 8) and abs(t.n_frames - t.duration_s * 12.5) <= 1
                assert t.asr_hyp and t.text_ref_norm and t.n_ref_words > 0
                assert all(getattr(t, c) is not None for c in QUALITY_COLUMNS), t  # clean speech: VAD found some
                assert 1.0 <= t.dnsmos_ovrl <= 5.0 and 0.5 < t.speech_ratio <= 1.0
    for r in map(DialogueRow.from_dict, _rows(out / "rejects")):
        assert all(t.codes is None for t in r.turns)  # the codec is spent on kept dialogues only


def test_resume_after_kill_finishes_with_the_same_shards_as_the_library(filter_out, dialogue_sample, tiny_codec):
    """The killed + resumed Ray run equals, byte for byte, the steps run in-process on one machine."""
    out, summary = filter_out
    done = summary["killed_done"]
    assert 1 <= len(done) < 4, "the kill should land mid-run"
    assert summary["shards_skipped"] == len(done) and summary["shards_written"] == 4 - len(done)
    for name, mtime in done.items():  # finished shards were not rewritten
        assert (out / "kept" / f"{name}.parquet").stat().st_mtime_ns == mtime
    for f in out.rglob("*.parquet"):  # a killed writer may leave a temp file, never a half shard
        pq.read_metadata(f)

    run_id = json.loads((out / "_run.json").read_text())["run_id"]
    metadata = dict(pq.read_schema(next((out / "kept").glob("shard-*.parquet"))).metadata)
    metadata.pop(b"ARROW:schema", None)
    opts = ReaderOptions()
    ref = out.parent / (out.name + "_reference")
    asr = load_asr(metadata[b"asr"].decode())  # the backend the job resolved once on its driver
    job = filter_job("dialogue", opts, run_id, asr=asr, rules=Rules.load(dialogue_sample.parent / RULES_FILE), codec=tiny_codec,
                     max_seconds=60.0, rows_per_shard=4, batch_size=8, quality=("dnsmos", "vad"))
    run_local(job, list_units(str(dialogue_sample), "dialogue", opts), str(ref), metadata)
    for sub in ("kept", "rejects", "quarantine"):
        names = sorted(p.name for p in (ref / sub).glob("shard-*.parquet"))
        assert names == sorted(p.name for p in (out / sub).glob("shard-*.parquet")) and names
        for name in names:
            assert (out / sub / name).read_bytes() == (ref / sub / name).read_bytes(), f"{sub}/{name} differs"


def test_every_column_is_the_same_whatever_the_batching(loaded_records, dialogue_sample, faster_asr, tiny_codec):
    """The sample's dialogues through the filter's steps (DNSMOS + VAD, tiny.en, tiny codec) in one batch, one row
    per batch, and batches of 3 in reverse order with other thread counts: every column of every row (scores,
    hypotheses, WER/CER, VAD fields, durations, codes) is the same to the bit. A step's actors, a Ray block and a
    resumed run only cut batches another way, so this is what lets a killed-and-resumed run write the same bytes."""
    import copy

    import torch

    from filtering.filter_job import EncodeKept, QualityBatch, ScoreBatch
    from filtering.quality import QualityScorer
    from tokenization.dialogue_schema import dialogue_rows_to_table

    rules = Rules.load(dialogue_sample.parent / RULES_FILE)
    encode = EncodeKept(tiny_codec)

    def table(batches, quality):
        steps = (QualityBatch(quality, rules), ScoreBatch(faster_asr, rules), encode)
        for batch in batches:
            for step in steps:
                step(batch)
        items = sorted((i for b in batches for i in b), key=lambda i: (i.unit, i.pos))
        return dialogue_rows_to_table([i.row for i in items if i.status == "ok"])

    one = copy.deepcopy(loaded_records)
    reference = table([one], QualityScorer(("dnsmos", "vad")))
    assert reference.num_rows == sum(i.status == "ok" for i in loaded_records) >= 10
    assert any(r["keep"] for r in reference.to_pylist()) and any(not r["keep"] for r in reference.to_pylist())
    singles = copy.deepcopy(loaded_records)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the codec and VAD on one thread here, on all of the process's in the other runs
        by_one = table([[i] for i in singles], QualityScorer(("dnsmos", "vad")))
    finally:
        torch.set_num_threads(threads)
    rev = copy.deepcopy(loaded_records)[::-1]
    by_three = table([rev[s:s + 3] for s in range(0, len(rev), 3)], QualityScorer(("dnsmos", "vad"), threads=2))
    for name, other in (("one row per batch", by_one), ("reversed batches of 3, 2 DNSMOS threads", by_three)):
        differ = [c for c in reference.column_names if not reference[c].equals(other[c])]
        assert not differ, f"{name}: columns {differ} differ from the single batch's"


def test_filter_tts_token_shards(tmp_path, tokenize_out, cache_dir):
    folder, manifest = tokenize_out
    out = tmp_path / "tts_filtered"
    s = run_module("pipelines.filter", "--input", str(folder), "--audio-manifest", str(manifest), "--output", str(out),
                   "--asr", "tiny.en", "--max-wer", "0.3", "--num-cpus", "2")
    n_token_rows = len(_rows(folder / "shards"))
    assert s["rows_in"] == n_token_rows == s["kept"] + s["rejected"] + s["quarantined"]
    assert (s["units_new"], s["units_changed"], s["units_removed"], s["units_unchanged"]) == (
        len(list((folder / "shards").glob("*.parquet"))), 0, 0, 0)  # a first run: every token shard is a new unit
    kept, rejects = _rows(out / "kept"), _rows(out / "rejects")
    assert pq.read_schema(next((out / "kept").glob("*.parquet"))).remove_metadata().equals(scored_tts_schema())
    assert len({r["asr_model"] for r in kept + rejects}) == 1 and kept[0]["asr_model"] in TINY_EN_MODELS
    for r in kept + rejects:
        assert r["text_ref_norm"] and r["n_ref_words"] > 0
        assert np.asarray(r["codes"]).shape == (r["n_frames"], 8)  # token columns travel unchanged
    assert all(r["wer"] <= 0.3 for r in kept) and all(r["reject_reason"] for r in rejects)
