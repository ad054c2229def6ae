"""`pipelines.dedup` on a planted set of real espeak speech tokenized by the tiny codec: every reason, across
folders, incremental runs, `--keep best`, the training exclusion and its dry run; one Ray run as users run it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filtering.dedup.decide import Node, decide
from filtering.dedup.index import DedupSettings
from filtering.dedup.job import PAIRS, DedupOptions, run_dedup
from filtering.dedup.match import EVAL_TEXT, NEAR, PAIRS_SCHEMA, TEXT
from filtering.dedup.sample import TRANSFORMS, make_dedup_sample
from tests.jobs import run_module
from tokenization.dedup_schema import DECISIONS, DECISIONS_SCHEMA, excluded_ids, folder_name
from tokenization.errors import UserError

N, N_LONG = 2, 1  # base sentences (each planted as every transform), long texts shared with eval
AGREED = ["utt_id", "folder", "cluster_id", "cluster_size", "keep", "reason", "score", "matched_utt_id", "matched_folder"]


def _tokenize(manifest: Path, out: Path, codec) -> str:
    """The tokenize job's steps in this process, as `pipelines.tokenize` orders them."""
    from tokenization.tokenize_job import tokenize_local

    return tokenize_local(str(manifest), str(out), codec, rows_per_shard=4, batch_size=4)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_codec) -> dict[str, str]:
    """Token folders `base`, `copies`, `eval` of the planted sample (`filtering.dedup.sample`)."""
    root = tmp_path_factory.mktemp("dedup")
    manifests = make_dedup_sample(root / "sample", N, N_LONG)
    return {k: _tokenize(m, root / k, tiny_codec) for k, m in manifests.items()}


@pytest.fixture(scope="module")
def deduped(planted, tmp_path_factory) -> tuple[str, dict, dict[str, dict]]:
    out = str(tmp_path_factory.mktemp("dd") / "dedup")
    summary = run_dedup([planted["base"], planted["copies"]], out, [planted["eval"]], DedupSettings(), DedupOptions())
    return out, summary, _decisions(out)


def _decisions(out: str) -> dict[str, dict]:
    files = sorted(Path(out, DECISIONS).glob("*.parquet"))
    return {r["utt_id"]: r for f in files for r in pq.read_table(f).to_pylist()}


def test_every_reason_on_the_planted_set_across_folders(planted, deduped):
    out, summary, rows = deduped
    table = pq.read_table(next(Path(out, DECISIONS).glob("*.parquet")))
    assert table.schema.names[:len(AGREED)] == AGREED
    assert [table.schema.field(n).type for n in AGREED] == [DECISIONS_SCHEMA.field(n).type for n in AGREED]
    base, copies, ev = (folder_name(planted[k]) for k in ("base", "copies", "eval"))
    for i in range(1, N):  # clip 0 leaks into eval (below); the others keep their original
        orig = rows[f"orig_{i:03d}"]
        assert orig["keep"] and orig["reason"] == "" and orig["folder"] == base and orig["cluster_size"] == len(TRANSFORMS) + 2
        for t in TRANSFORMS:
            r = rows[f"{t}_{i:03d}"]
            assert (r["reason"], r["keep"], r["matched_utt_id"], r["matched_folder"], r["folder"], r["cluster_id"]) == (
                "exact_audio" if t == "exact" else "near_audio", False, orig["utt_id"], base, copies, orig["cluster_id"]), t
            assert r["score"] == 1.0 if t == "exact" else DedupSettings().near_jaccard <= r["score"] <= 1.0
        voice = rows[f"voice_{i:03d}"]  # the same sentence by another voice: reported, kept
        assert (voice["reason"], voice["keep"], voice["matched_utt_id"]) == ("text_only", True, orig["utt_id"])
    leak = rows["orig_000"]  # an MP3 copy of it is in eval, under another transcript: audio alone matched
    assert (leak["reason"], leak["keep"], leak["matched_utt_id"], leak["matched_folder"]) == ("eval_overlap", False, "evalmp3_000", ev)
    assert DedupSettings().near_jaccard <= leak["score"] < 1.0
    text = rows["long_000"]  # its long transcript is in eval, read by another voice: a shared 13-gram
    assert (text["reason"], text["keep"], text["matched_utt_id"], text["score"]) == ("eval_overlap", False, "evaltext_000", 1.0)
    assert rows["voice_000"]["keep"]  # its cluster's only row not leaking: the keeper
    audio = {r["utt_id"] for r in rows.values() if r["reason"] in ("exact_audio", "near_audio")}
    assert not any(u.startswith("voice_") for u in audio), "another voice must never match as the same audio"
    assert len({rows[f"orig_{i:03d}"]["cluster_id"] for i in range(N)}) == N  # another text by the same voice: apart
    dropped = [r for r in rows.values() if not r["keep"]]
    assert summary["clusters"] == N and summary["rows"] == N + N_LONG + N * (len(TRANSFORMS) + 1)
    by = summary["dropped_rows_by_source"]
    assert sum(sum(v.values()) for v in by.values()) == len(dropped) == summary["dropped_rows"]
    assert by[copies]["exact_audio"] == N - 1 and by[base]["eval_overlap"] == 2
    hours = sum(r["duration_s"] for r in dropped if r["folder"] == copies and r["reason"] == "near_audio") / 3600
    assert summary["dropped_hours_by_source"][copies]["near_audio"] == pytest.approx(hours, abs=1e-5)
    assert json.loads(Path(out, "_summary.json").read_text())["dropped_rows_by_source"] == by


def test_rerun_compares_nothing_new_and_text_dups_drop(planted, deduped, tmp_path):
    out, first, rows = deduped
    s = run_dedup([planted["base"], planted["copies"]], out, [planted["eval"]], DedupSettings(), DedupOptions(text_dups="drop"))
    assert (s["units_indexed"], s["pairs_new"], s["units_unchanged"]) == (0, 0, first["units_new"])
    again = _decisions(out)
    assert all(not again[f"voice_{i:03d}"]["keep"] for i in range(1, N))
    assert {k: v for k, v in again.items() if v["reason"] != "text_only"} == {k: v for k, v in rows.items() if v["reason"] != "text_only"}
    run_dedup([planted["base"], planted["copies"]], out, [planted["eval"]], DedupSettings(), DedupOptions())  # as the fixture left it


def test_incremental_runs_compare_only_new_units_and_equal_a_fresh_run(planted, tmp_path):
    copies = str(shutil.copytree(planted["copies"], tmp_path / "copies"))  # this test touches its files
    inc, fresh = str(tmp_path / "inc"), str(tmp_path / "fresh")
    first = run_dedup([copies], inc, [], DedupSettings(), DedupOptions())
    pairs_before = pq.read_table(Path(inc, PAIRS)).num_rows
    grown = run_dedup([copies, planted["base"]], inc, [], DedupSettings(), DedupOptions())
    assert grown["units_unchanged"] == first["units_new"] and grown["units_new"] == grown["units_indexed"] > 0
    pairs = pq.read_table(Path(inc, PAIRS))
    assert pairs_before > 0 and grown["pairs_new"] == pairs.num_rows - pairs_before  # copies x copies pairs came from the store
    run_dedup([copies, planted["base"]], fresh, [], DedupSettings(), DedupOptions())
    assert _decisions(inc) == _decisions(fresh)
    shard = sorted(Path(copies, "shards").glob("*.parquet"))[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # a changed file: indexed and compared again
    changed = run_dedup([copies, planted["base"]], inc, [], DedupSettings(), DedupOptions())
    assert (changed["units_changed"], changed["units_indexed"]) == (1, 1) and 0 < changed["pairs_new"] < pairs.num_rows
    assert _decisions(inc) == _decisions(fresh) and pq.read_table(Path(inc, PAIRS)).num_rows == pairs.num_rows
    shrunk = run_dedup([copies], inc, [], DedupSettings(), DedupOptions())
    assert shrunk["units_removed"] == grown["units_new"] and shrunk["pairs_new"] == 0
    assert not any(r["folder"] == folder_name(planted["base"]) for r in _decisions(inc).values())


def test_keep_best_and_eval_leaks_never_keep():
    def n(i: int, dnsmos=None, wer=None, text_dup=False) -> Node:
        return Node(f"u{i}", "/f", "/f/shards/x.parquet", i, (False, 0, 0, i), 2.0, dnsmos, wer, np.arange(i, i + 10, dtype=np.uint32), (i + 1, 0))
    nodes = {0: n(0, 3.1), 1: n(1, 3.9), 2: n(2, None, 0.1), 3: n(3, 2.0), 4: n(4, 4.5), 9: n(9)}
    pairs = pa.table({"a": [0, 0, 2, 4], "b": [1, 2, 3, 9], "kind": [NEAR, TEXT, NEAR, EVAL_TEXT], "score": [0.5, 1.0, 0.6, 1.0]},
                     schema=PAIRS_SCHEMA)
    best = {r["utt_id"]: r for r in decide(pairs, nodes, keep="best")}
    assert best["u1"]["keep"] and best["u1"]["reason"] == ""  # highest dnsmos_ovrl of its cluster
    assert (best["u0"]["reason"], best["u0"]["matched_utt_id"], best["u0"]["keep"]) == ("near_audio", "u1", False)
    assert (best["u3"]["reason"], best["u3"]["keep"], best["u3"]["matched_utt_id"]) == ("text_only", True, "u1")  # 3 beats 2 on dnsmos
    assert (best["u2"]["reason"], best["u2"]["matched_utt_id"]) == ("near_audio", "u3")
    assert (best["u4"]["reason"], best["u4"]["keep"], best["u4"]["matched_utt_id"], best["u4"]["cluster_size"]) == ("eval_overlap", False, "u9", 1)
    first = {r["utt_id"]: r for r in decide(pairs, nodes, keep="first", text_dups="drop")}
    assert first["u0"]["keep"] and (first["u2"]["reason"], first["u2"]["keep"]) == ("text_only", False)


def test_training_skips_the_dropped_rows_and_the_dry_run_counts_them(planted, deduped):
    from training.data.selection import Selection
    from training.data.sources import TokenShardSource
    from training.dry_run import scan_sources
    from training.stage_config import CONFIG_DIR, load_config

    out, _, rows = deduped
    copies = planted["copies"]
    dropped = {u for u, r in rows.items() if not r["keep"] and r["folder"] == folder_name(copies)}
    assert excluded_ids([out], copies + "/shards") == dropped and dropped
    src = TokenShardSource(copies + "/shards", split=None, selection=Selection(exclude=excluded_ids([out], copies)))
    kept = {r["utt_id"] for g in src.units for r in src.read(g, None)}
    every = TokenShardSource(copies + "/shards", split=None)
    everything = {r["utt_id"] for g in every.units for r in every.read(g, None)}
    assert kept == everything - dropped and kept
    cfg = load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"),
                      [f"data.sources=[{{path: {copies}/shards, exclude: {out}}}, {{path: {planted['base']}/shards}}]"])
    entry = scan_sources(cfg, 4, [])["sources"][0]
    ex = entry["exclusion"]
    assert (ex["before"]["rows"], ex["after"]["rows"]) == (len(everything), len(everything) - len(dropped))
    assert ex["after"]["rows"] == sum(v["rows"] for v in entry["splits"].values()) and ex["before"]["hours"] > ex["after"]["hours"]
    with pytest.raises(Exception, match=r"data.sources\[0\].exclude"):
        load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), [f"data.sources=[{{path: {copies}, exclude: {copies}}}]"])


def test_token_shards_before_schema_4_are_told_to_rerun(planted, tmp_path):
    old = tmp_path / "old" / "shards"
    old.mkdir(parents=True)
    t = pq.read_table(next(Path(planted["base"], "shards").glob("*.parquet"))).drop_columns(["audio_fp"])
    pq.write_table(t, old / "shard-0.parquet")
    with pytest.raises(UserError, match="no audio_fp column.*rerun pipelines.tokenize"):
        run_dedup([str(old.parent)], str(tmp_path / "dd"), [], DedupSettings(), DedupOptions())


@pytest.mark.slow
def test_dedup_job_on_ray_as_users_run_it(planted, deduped, tmp_path):
    out = str(tmp_path / "dedup")
    summary = run_module("pipelines.dedup", "--input", planted["base"], "--input", planted["copies"], "--against", planted["eval"],
                         "--output", out, "--num-cpus", "2", "--parts", "3")
    _, local, rows = deduped
    assert {k: summary[k] for k in ("rows", "clusters", "dropped_rows_by_source", "units_new")} == \
        {k: local[k] for k in ("rows", "clusters", "dropped_rows_by_source", "units_new")}
    assert _decisions(out) == rows
    assert Path(out, "logs", "dedup.log").exists()


def test_dialogue_shards_are_fingerprinted_from_their_turns(filter_out, tmp_path):
    from filtering.sample_dialogues import DUPLICATE_ID, DUPLICATE_OF

    folder, _ = filter_out
    summary = run_dedup([str(folder)], str(tmp_path / "dd"), [], DedupSettings(), DedupOptions(keep="best"))
    rows = _decisions(str(tmp_path / "dd"))
    pair = {rows[DUPLICATE_ID]["reason"], rows[DUPLICATE_OF]["reason"]}  # the same audio under a new id
    assert pair == {"", "exact_audio"} and rows[DUPLICATE_ID]["cluster_id"] == rows[DUPLICATE_OF]["cluster_id"]
    assert summary["dropped_rows_by_source"][folder_name(str(folder))]["exact_audio"] >= 1
