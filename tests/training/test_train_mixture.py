"""Mixtures of data sources: weighted deterministic interleave, per-source epochs, exact resume, agreement checks.

Shards here are written through the shard contracts without audio (fast); importing conftest_train's
fixtures would rebuild them for this module.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.training.conftest_train import synthetic_token_shards
from tokenization.errors import UserError
from tokenization.schema import file_metadata
from training.data.sources import TokenShardSource, check_sources
from training.data.stream import BatchStream, MixtureStream


def _mixture(paths: dict[str, str], weights: dict[str, float], shard: int = 0, n_shards: int = 1, batch_size: int = 2,
             seed: int = 0) -> MixtureStream:
    streams = {name: BatchStream(TokenShardSource(path), shard, n_shards, batch_size, buffer_size=8, seed=f"{seed}/{name}")
               for name, path in paths.items()}
    return MixtureStream(streams, weights, seed=seed, shard=shard)


def _draw(mix: MixtureStream, n: int) -> list[tuple[str, list[str]]]:
    """(source, example ids) of the next `n` batches; the source is the one whose row count grew."""
    out, batches = [], iter(mix)
    for _ in range(n):
        before = dict(mix.rows)
        ids = [ex["id"] for ex in next(batches)]
        out.append((next(name for name in mix.rows if mix.rows[name] != before[name]), ids))
    return out


@pytest.fixture(scope="module")
def halves(tmp_path_factory, tiny_codec) -> dict[str, str]:
    """Two sources of 18 train rows (of 5..39 frames, so buckets differ), written as the tiny codec's."""
    root = tmp_path_factory.mktemp("halves")
    return {name: str(synthetic_token_shards(root / name, ["train"] * 18, frames=list(range(5, 41, 2)), prefix=name,
                                             codec_info=tiny_codec.info, row_group_size=6))
            for name in ("a", "b")}


def test_weights_3_to_1_give_three_quarters_of_the_rows_and_each_source_its_own_epochs(halves):
    mix = _mixture(halves, {"a": 3, "b": 1})
    drawn = _draw(mix, 160)  # 320 rows
    share = mix.rows["a"] / sum(mix.rows.values())
    assert 0.70 <= share <= 0.80, share
    for n in (20, 40, 80):  # not only on average: every prefix is within a batch or so of 3:1
        assert abs(sum(src == "a" for src, _ in drawn[:n]) - 0.75 * n) <= 1.5, n
    # each source reads its 18 rows once per epoch of its own (9 batches of 2): a is in epoch 13, b in epoch 4
    for name, epochs in (("a", 13), ("b", 4)):
        ids = [ids for src, ids in drawn if src == name]
        assert mix.streams[name].state.epoch == len(ids) // 9 == epochs
        for e in range(epochs):
            epoch_ids = [i for batch in ids[9 * e:9 * (e + 1)] for i in batch]
            assert len(set(epoch_ids)) == len(epoch_ids) == 18
    assert _draw(_mixture(halves, {"a": 3, "b": 1}), 40) == drawn[:40]  # deterministic
    assert _draw(_mixture(halves, {"a": 3, "b": 1}, seed=1), 40) != drawn[:40]  # seeded


@pytest.fixture(scope="module")
def tiny_and_large(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mixture")
    return {"tiny": str(synthetic_token_shards(root / "tiny", ["train"] * 3, prefix="t")),
            "large": str(synthetic_token_shards(root / "large", ["train"] * 300, prefix="l", row_group_size=50))}


def test_a_3_row_source_beside_a_300_row_one_repeats_without_stalling(tiny_and_large):
    """Two readers, batches of 2: reader 1 gets one of the 3 rows per epoch and still makes a batch every 2 epochs."""
    for shard in (0, 1):
        mix = _mixture(tiny_and_large, {"tiny": 1, "large": 1}, shard=shard, n_shards=2)
        drawn = _draw(mix, 100)
        tiny = [i for src, ids in drawn if src == "tiny" for i in ids]
        assert len(tiny) == mix.rows["tiny"] == 100 and set(tiny) <= {"t0", "t1", "t2"}
        assert mix.streams["tiny"].state.epoch >= 25  # many epochs of the tiny source ...
        assert mix.streams["large"].state.epoch == 0  # ... while the large one (150 rows per reader) is in its first


def test_resume_mid_run_reproduces_the_uninterrupted_order(halves, tiny_and_large):
    """Checkpoint after 13 batches (a JSON round trip, fresh objects): the next 27 are the uninterrupted run's."""
    paths, weights = {"a": halves["a"], "tiny": tiny_and_large["tiny"]}, {"a": 1, "tiny": 2}
    reference = _draw(_mixture(paths, weights, shard=1, n_shards=2), 40)
    first = _mixture(paths, weights, shard=1, n_shards=2)
    head = _draw(first, 13)
    state = json.loads(json.dumps(first.state_dict()))
    assert any(s["carry"] for s in state["sources"].values())  # an example carried across a tiny-source epoch
    resumed = _mixture(paths, weights, shard=1, n_shards=2)
    resumed.load_state_dict(state)
    assert head + _draw(resumed, 27) == reference
    assert resumed.rows == {n: sum(len(ids) for src, ids in reference if src == n) for n in paths}  # rows/<name> go on


def test_a_state_saved_before_mixtures_resumes_the_one_source(halves):
    plain = BatchStream(TokenShardSource(halves["a"]), 0, 1, batch_size=2, buffer_size=8, seed="0/a")
    reference = [[ex["id"] for ex in batch] for batch, _ in zip(plain, range(12))]
    mix = _mixture({"a": halves["a"]}, {"a": 1})
    mix.load_state_dict({"epoch": 1, "batches_done": 1})  # what a one-source checkpoint held
    assert [ids for _, ids in _draw(mix, 2)] == reference[10:12]


def test_sources_of_another_codec_or_kind_are_one_line_errors_naming_both(halves, tiny_codec, tmp_path):
    from dataclasses import replace

    from tokenization.dialogue_schema import ASSISTANT, USER, DialogueRow, DialogueTurn, dialogue_rows_to_table

    ok = halves["a"]
    other = tmp_path / "other"
    other.mkdir()
    table = pq.read_table(halves["b"])
    pq.write_table(table.replace_schema_metadata(file_metadata(replace(tiny_codec.info, name="xy-tokenizer"))),
                   other / "shard-00000.parquet")
    check_sources(1, [("emilia", ok), ("copy", halves["b"])])  # the same codec: fine
    with pytest.raises(UserError) as err:
        check_sources(1, [("emilia", ok), ("xy", str(other))])
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and f"emilia ({ok})" in msg and f"xy ({other})" in msg and "codec_name" in msg, msg
    dialogue = tmp_path / "kept"
    dialogue.mkdir()
    turns = [DialogueTurn(USER, "hi", b"", 16000, 1.0), DialogueTurn(ASSISTANT, "hello", None, 24000, 1.0,
                                                                        np.zeros((12, 8), np.uint16), 12)]
    pq.write_table(dialogue_rows_to_table([DialogueRow("d0", "t", "en", "s", turns)]), dialogue / "part-0.parquet")
    with pytest.raises(UserError) as err:
        check_sources(1, [("emilia", ok), ("dialogue", str(dialogue))])
    msg = str(err.value)
    assert f"dialogue ({dialogue})" in msg and f"emilia ({ok})" in msg and "stage 1" in msg, msg
    check_sources(3, [("dialogue", str(dialogue))])  # the kind stage 3 trains on
