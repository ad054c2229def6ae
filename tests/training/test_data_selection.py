"""Rows selected at load time (`data.sources[].max_wer`, `.hours`) against rows counted straight from the Parquet files;
a Talker on fewer codebooks than the shards hold. In-process, no Ray, no training."""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.training.conftest_train import synthetic_token_shards
from tokenization.errors import UserError
from tokenization.schema import KEPT, REJECTS
from training.data.selection import Selection, source_folders
from training.data.sources import DialogueSource, TokenShardSource
from training.dry_run import scan_data
from training.stage_config import CONFIG_DIR, load_config


def selected_ids(source) -> list[str]:
    return [row[source.id_column] for g in source.units for row in source.read(g, None)]


def test_max_wer_reads_kept_and_rejected_rows_by_score(filter_out):
    folder, _ = filter_out
    table = pq.read_table([str(p) for t in (KEPT, REJECTS) for p in sorted((folder / t).glob("*.parquet"))],
                          columns=["dialogue_id", "wer", "split", "keep"])
    rows = table.to_pylist()
    assert {r["keep"] for r in rows} == {True, False}  # the sample has rejects: the threshold reaches into them
    for max_wer in (0.0, 0.1, 0.5, math.inf):
        want = sorted(r["dialogue_id"] for r in rows if math.isinf(max_wer) or (r["wer"] is not None and r["wer"] <= max_wer))
        for path in (folder, folder / KEPT):  # the filter output, or its kept/ (rejects/ beside it)
            got = sorted(selected_ids(DialogueSource(str(path), with_codes=False, split=None, selection=Selection(max_wer=max_wer))))
            assert got == want, (max_wer, path)
        train = [r for r in rows if r["split"] == "train" and r["dialogue_id"] in want]
        scanned = scan_data(str(folder), 2, 0, selection=Selection(max_wer=max_wer))["splits"]
        assert sum(s["rows"] for s in scanned.values()) == len(want)  # the dry run counts the same rows
        assert scanned.get("train", {"rows": 0})["rows"] == len(train)
    everything = len(rows)
    assert len(selected_ids(DialogueSource(str(folder / KEPT), with_codes=False, split=None))) < everything  # no max_wer: kept/ only
    # stage 3 trains on replies with codes: the filter encodes kept rows only
    with_codes = DialogueSource(str(folder), with_codes=True, split=None, selection=Selection(max_wer=math.inf))
    ids = {ex["id"].split("/")[0] for g in with_codes.units for row in with_codes.read(g, None) for ex in with_codes.examples(row)}
    assert ids and ids <= {r["dialogue_id"] for r in rows if r["keep"]}
    with pytest.raises(UserError, match="max_wer selects rows of a filter output"):
        source_folders(str(folder / "quarantine"), 0.1)


def test_hours_is_a_nested_subset_by_id_hash(tmp_path):
    splits = ["train"] * 30 + ["valid"] * 4
    frames = [10 + (7 * i) % 40 for i in range(len(splits))]  # 0.8 .. 3.9 s each
    folder = synthetic_token_shards(tmp_path / "tokens", splits, frames=frames, row_group_size=5)
    dur = {f"u{i}": n / 12.5 for i, n in enumerate(frames)}
    train = sorted((int.from_bytes(hashlib.sha1(u.encode()).digest()[:8], "big"), u) for u, s in zip(dur, splits) if s == "train")
    total_h = sum(dur[u] for _, u in train) / 3600
    previous: set[str] = set()
    for hours in (0.002, 0.006, 0.012, total_h * 2):
        want, acc = [], 0.0
        for _, u in train:  # hash order until the durations reach `hours`
            want.append(u)
            acc += dur[u]
            if acc >= hours * 3600:
                break
        got = selected_ids(TokenShardSource(str(folder), selection=Selection(hours=hours)))
        assert sorted(got) == sorted(want), hours
        assert previous <= set(got)  # nested
        previous = set(got)
        valid = selected_ids(TokenShardSource(str(folder), split="valid", selection=Selection(hours=hours)))
        assert len(valid) == 4  # valid rows stay whole
        scanned = scan_data(str(folder), 1, 0, selection=Selection(hours=hours))["splits"]
        assert scanned["train"]["rows"] == len(want) and scanned["valid"]["rows"] == 4
        assert scanned["train"]["hours"] == pytest.approx(sum(dur[u] for u in want) / 3600, abs=1e-5)
    assert len(previous) == 30  # more hours than the source has: every train row


def test_selection_keys_in_stage_configs(tmp_path):
    stage1 = os.path.join(CONFIG_DIR, "stage1_tiny.yaml")
    cfg = load_config(stage1, ["data.sources=[{path: a}, {path: b}]", "data.sources[1].hours=100", "data.sources[0].max_wer=.inf"])
    a, b = cfg.data.mixture()
    assert (a.max_wer, a.hours, b.max_wer, b.hours) == (math.inf, 0.0, None, 100.0)
    for override, key in [("data.sources[0].hours=-1", "data.sources[0].hours"), ("data.sources[0].max_wer=-0.1", "data.sources[0].max_wer"),
                          ("data.sources[3].hours=1", "data.sources[3].hours")]:
        with pytest.raises(UserError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_config(stage1, ["data.sources=[{path: a}]", override])
    with pytest.raises(UserError, match=r"data.sources\[0\].hours: .*stage 1 only"):
        load_config(os.path.join(CONFIG_DIR, "stage3_tiny.yaml"), ["data.sources=[{path: a, hours: 10}]"])


def test_a_one_codebook_talker_reads_the_first_track(tokenizer_path):
    from transformers import PreTrainedTokenizerFast

    from training.data.collate import collate_tts
    from training.model import VocalNetConfig, VocalNetM2

    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)
    cfg = VocalNetConfig.tiny(n_mtp=1, n_codebooks=1, delays=[0])
    codes = np.arange(5 * 8, dtype=np.uint16).reshape(5, 8)  # a frame of the 8-codebook shards: [T, K]
    batch = collate_tts([{"text": "hi there", "codes": codes, "n_frames": 5}], tok, cfg)
    assert batch["codes"].shape == (1, 5, 1) and batch["codes"][0, :, 0].tolist() == codes[:, 0].tolist()
    model = VocalNetM2(cfg, tokenizer_path)
    model.set_stage(1)
    assert math.isfinite(float(model(batch, stage=1)["loss"].detach()))
