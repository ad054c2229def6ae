"""TTS-mode filtering joins token shards with their source audio one input unit at a time."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

import filtering.filter_job as steps
from tests.jobs import visible_files
from tokenization.schema import TokenRow, rows_to_table
from tokenization.engine.output_folder import shard_name
from tokenization.readers.registry import list_units
from tokenization.units import ReaderOptions, Unit


def _corpus(tmp_path):
    """Two manifest files (two units) of two clips each, and the listing the tokenize job made."""
    for m in range(2):
        lines = []
        for i in range(2):
            wav = tmp_path / f"m{m}_{i}.wav"
            sf.write(wav, np.zeros(1600, np.float32), 16000)
            lines.append(json.dumps({"id": f"m{m}_{i}", "audio_path": wav.name, "text": "a b", "speaker": "s"}))
        (tmp_path / f"part{m}.jsonl").write_text("\n".join(lines) + "\n")
    units = tuple(list_units(str(tmp_path), "auto", ReaderOptions()))
    assert [u.uri.rsplit("/", 1)[-1] for u in units] == ["part0.jsonl", "part1.jsonl"]
    return units


def _shard(folder, name, ids):
    rows = [TokenRow(i, "src", "s", "en", "a b", 0.1, 2, np.zeros((2, 8), np.uint16), "", "r") for i in ids]
    path = folder / f"{name}.parquet"
    pq.write_table(rows_to_table(rows), path)
    return Unit(uri=str(path), fmt="token-shards")


def test_a_shard_reads_only_the_unit_it_was_tokenized_from(tmp_path, monkeypatch):
    units = _corpus(tmp_path)
    read = []
    real = steps.read_unit
    monkeypatch.setattr(steps, "read_unit", lambda unit, opts: (read.append(unit.uri), real(unit, opts))[1])
    steps._AUDIO_INDEX.clear()
    shard = _shard(tmp_path, shard_name(units[1].key, 0), ["m1_0", "m1_1"])
    rows = list(steps.read_token_rows(shard, units))
    assert [r["_audio"].path.rsplit("/", 1)[-1] for r in rows] == ["m1_0.wav", "m1_1.wav"]
    assert read == [units[1].uri] and not steps._AUDIO_INDEX  # one unit read, no corpus-wide index built

    # Units listed differently from the tokenize run (unit 0's shard holds unit 1's rows): the whole index.
    read.clear()
    rows = list(steps.read_token_rows(_shard(tmp_path, shard_name(units[0].key, 0), ["m1_1"]), units))
    assert rows[0]["_audio"].path.endswith("m1_1.wav") and read == [units[0].uri, units[0].uri, units[1].uri]


def _tokenize(corpus, out, codec):
    """The tokenize job's steps over a folder of manifests (no Ray), as `pipelines.tokenize` orders them."""
    from tokenization.tokenize_job import tokenize_local

    tokenize_local(str(corpus), str(out), codec, rows_per_shard=2, batch_size=2)


def _filter(tokens, corpus, out, codec, asr):
    """The TTS-mode filter's steps over a token folder joined with the tokenize input (no Ray). Returns the sync plan."""
    from filtering.rules import Rules
    from filtering.filter_job import FilterSink
    from pipelines.args import input_units
    from pipelines.filter import token_shard_units
    from tokenization.engine.local_run import run_local
    from tokenization.engine.output_folder import compute_run_id, prepare_output, sync_output
    from tokenization.engine.writer import write_manifest
    from tokenization.schema import file_metadata

    opts, config = ReaderOptions(), {"kind": "tts"}
    units = input_units(str(tokens), "auto", opts, lister=token_shard_units)
    audio_units = tuple(list_units(str(corpus), "auto", opts))
    run_id = compute_run_id(config)
    prepare_output(str(out), run_id, config)
    plan = sync_output(str(out), units, FilterSink.tables)
    job = steps.filter_job("tts", opts, run_id, asr=asr, rules=Rules(max_wer=0.5), codec=codec, max_seconds=60.0,
                           rows_per_shard=2, batch_size=4, audio_units=audio_units)
    run_local(job, units, str(out), file_metadata(codec.info, {"run_id": run_id}))
    write_manifest(str(out), run_id, units, FilterSink.tables)
    return plan


def test_the_tts_filter_joins_by_unit_key_across_incremental_runs_of_both_jobs(tmp_path, tts_sample, tiny_codec, faster_asr,
                                                                                monkeypatch):
    """A manifest that sorts first arrives and another is re-uploaded: tokenize and filter rerun into their folders;
    the filter redoes only the token shards of those two, each reading only its own manifest for audio (by key, not
    listing position), and ends equal to a fresh filter run."""
    lines = [json.loads(line) for line in tts_sample.read_text().splitlines()]
    for r in lines:
        r["audio_path"] = str(tts_sample.parent / r["audio_path"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()

    def manifest(name, recs):
        (corpus / name).write_text("".join(json.dumps(r) + "\n" for r in recs))

    manifest("part0.jsonl", lines[0:2])
    manifest("part1.jsonl", lines[2:4])
    tokens, filtered = tmp_path / "tokens", tmp_path / "filtered"
    _tokenize(corpus, tokens, tiny_codec)
    _filter(tokens, corpus, filtered, tiny_codec, faster_asr)

    manifest("a_first.jsonl", lines[4:6])  # sorts before both: every listing position moves
    manifest("part1.jsonl", lines[2:3] + lines[6:7])  # re-uploaded with other content
    _tokenize(corpus, tokens, tiny_codec)
    read = []
    real = steps.read_unit
    monkeypatch.setattr(steps, "read_unit", lambda unit, opts: (read.append(unit.uri.rsplit("/", 1)[-1]), real(unit, opts))[1])
    steps._AUDIO_INDEX.clear()
    plan = _filter(tokens, corpus, filtered, tiny_codec, faster_asr)
    assert plan.counts() == {"units_new": 1, "units_changed": 1, "units_removed": 0, "units_unchanged": 1}
    assert set(read) == {"a_first.jsonl", "part1.jsonl"} and not steps._AUDIO_INDEX  # each shard's own unit only
    quarantine = pq.read_table(filtered / "quarantine").to_pylist() if (filtered / "quarantine").exists() else []
    assert not [q for q in quarantine if "no source audio" in q["reason"]]
    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    _filter(tokens, corpus, fresh, tiny_codec, faster_asr)
    assert visible_files(filtered) == visible_files(fresh)
    assert json.loads((filtered / "_manifest.json").read_text())["counts"]["in"] == 6
