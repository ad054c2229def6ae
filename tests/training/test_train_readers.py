"""Streaming readers: every row read once per epoch across readers, bucketing, exact resume, dialogue pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.training.conftest_train import *  # noqa: F401,F403
from training.data.sources import WHISPER_SAMPLE_RATE, DialogueSource, TokenShardSource
from training.data.stream import BatchStream, fixed_batches
from training.data.row_groups import list_row_groups, loader_shard, shard_rows


def _ids(stream: BatchStream, epoch: int) -> list[str]:
    return [ex["id"] for batch in stream.epoch_batches(epoch) for ex in batch]


@pytest.mark.parametrize("n_shards", [1, 2, 3, 8])
def test_each_row_read_by_exactly_one_reader_per_epoch(token_shards, n_shards):
    source = TokenShardSource(str(token_shards))
    assert sum(u.num_rows for u in source.units) == 36
    for epoch in (0, 1):
        seen = []
        for shard in range(n_shards):
            for unit, rows in shard_rows(source.units, shard, n_shards, seed=3, epoch=epoch):
                seen += [(unit.path, unit.row_group, r) for r in (rows if rows is not None else range(unit.num_rows))]
        assert len(seen) == len(set(seen)) == 36


def test_batches_are_length_bucketed_and_deterministic(token_shards):
    source = TokenShardSource(str(token_shards))
    a = BatchStream(source, 0, 1, batch_size=4, buffer_size=36, seed=1)
    batches = list(a.epoch_batches(0))
    assert len(batches) == 9 and all(len(b) == 4 for b in batches)
    # within a bucket lengths are sorted neighbours: the spread in a batch is far below the overall spread
    spreads = [max(e["n_frames"] for e in b) - min(e["n_frames"] for e in b) for b in batches]
    lengths = [e["n_frames"] for b in batches for e in b]
    assert np.mean(spreads) < (max(lengths) - min(lengths)) / 3
    b = BatchStream(source, 0, 1, batch_size=4, buffer_size=36, seed=1)
    assert _ids(a, 0) == _ids(b, 0)
    assert _ids(a, 0) != _ids(a, 1)  # a new epoch reshuffles
    assert sorted(_ids(a, 0)) == sorted(_ids(a, 1))


def test_small_buffer_bounds_memory_and_keeps_rows(token_shards):
    stream = BatchStream(TokenShardSource(str(token_shards)), 0, 1, batch_size=4, buffer_size=8, seed=0)
    ids = _ids(stream, 0)
    assert len(ids) == len(set(ids)) == 36  # leftovers carry over between buffer flushes


def test_resume_from_state_continues_exactly(token_shards):
    source = TokenShardSource(str(token_shards))
    full = BatchStream(source, 1, 2, batch_size=3, buffer_size=9, seed=7)
    reference = [[e["id"] for e in b] for b in itertools.islice(full, 20)]  # crosses epochs
    first = BatchStream(source, 1, 2, batch_size=3, buffer_size=9, seed=7)
    head = [[e["id"] for e in b] for b in itertools.islice(first, 8)]
    resumed = BatchStream(source, 1, 2, batch_size=3, buffer_size=9, seed=7)
    resumed.load_state_dict(first.state_dict())
    tail = [[e["id"] for e in b] for b in itertools.islice(resumed, 12)]
    assert head + tail == reference


def test_loader_shard_counts_workers():
    assert loader_shard(0, 2, 0, 1) == (0, 2)
    assert loader_shard(1, 2, 1, 2) == (3, 4)


def test_dialogue_pairs_for_stage2_and_stage3(dialogue_shards):
    s2 = DialogueSource(str(dialogue_shards), with_codes=False)
    s3 = DialogueSource(str(dialogue_shards), with_codes=True)
    assert len(list_row_groups(str(dialogue_shards))) == 3
    ex2 = next(iter(BatchStream(s2, 0, 1, batch_size=2, buffer_size=4)))[0]
    assert set(ex2) == {"id", "assistant_text", "user_audio"}
    assert ex2["user_audio"].dtype == np.float32 and len(ex2["user_audio"]) > WHISPER_SAMPLE_RATE * 0.5
    ex3 = next(iter(BatchStream(s3, 0, 1, batch_size=2, buffer_size=4)))[0]
    assert ex3["assistant_codes"].shape[1] == 8 and ex3["assistant_codes"].dtype == np.uint16
    assert ex3["n_frames"] == len(ex3["assistant_codes"])
    ids = _ids(BatchStream(s3, 0, 2, batch_size=1, buffer_size=4), 0) + _ids(BatchStream(s3, 1, 2, batch_size=1, buffer_size=4), 0)
    assert len(ids) == len(set(ids)) == 12


def test_reads_s3(token_shards, monkeypatch):
    moto = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto.ThreadedMotoServer(port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="shards")
        for f in sorted(token_shards.glob("*.parquet")):
            s3.upload_file(str(f), "shards", f"tokens/{f.name}")
        stream = BatchStream(TokenShardSource("s3://shards/tokens"), 0, 1, batch_size=4, buffer_size=36, seed=1)
        local = BatchStream(TokenShardSource(str(token_shards)), 0, 1, batch_size=4, buffer_size=36, seed=1)
        assert [e["text"] for e in next(iter(stream))] == [e["text"] for e in next(iter(local))]
    finally:
        server.stop()


def test_prefetcher_reports_the_state_of_the_batch_in_hand(token_shards):
    from training.data.stream import Prefetcher

    source = TokenShardSource(str(token_shards))
    plain = BatchStream(source, 0, 1, batch_size=4, buffer_size=8, seed=2)
    expected = [[e["id"] for e in b] for b in itertools.islice(plain, 12)]
    pre = Prefetcher(BatchStream(source, 0, 1, batch_size=4, buffer_size=8, seed=2), lambda rows: [e["id"] for e in rows], depth=3)
    got, states = [], []
    for _ in range(5):
        n, ids, state = next(pre)
        got.append(ids)
        states.append(state)
    pre.close()
    resumed = BatchStream(source, 0, 1, batch_size=4, buffer_size=8, seed=2)
    resumed.load_state_dict(states[-1])  # what a checkpoint after the 5th batch saves
    got += [[e["id"] for e in b] for b in itertools.islice(resumed, 7)]
    assert got == expected and n == 4


def test_prefetcher_raises_collate_errors(token_shards):
    from training.data.stream import Prefetcher

    def bad(rows):
        raise RuntimeError("boom")

    pre = Prefetcher(BatchStream(TokenShardSource(str(token_shards)), 0, 1, batch_size=4), bad)
    with pytest.raises(RuntimeError, match="boom"):
        next(pre)


def test_sources_read_their_split_only(token_shards, tmp_path, caplog):
    """Train reads train rows, valid reads valid rows; row groups without valid rows are never opened."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(token_shards)  # 36 rows, all train
    split = ["valid" if i in (7, 8, 20) else "test" if i in (30, 31) else "train" for i in range(table.num_rows)]
    table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(split))
    pq.write_table(table, tmp_path / "mixed.parquet", row_group_size=6)
    ids = table.column("utt_id").to_pylist()

    train = TokenShardSource(str(tmp_path / "mixed.parquet"))
    valid = TokenShardSource(str(tmp_path / "mixed.parquet"), split="valid")
    assert len(train.units) == 6 and len(valid.units) == 2  # groups 1 and 3 hold the valid rows
    got = sorted(ex["id"] for b in BatchStream(train, 0, 1, batch_size=1, buffer_size=4).epoch_batches(0) for ex in b)
    assert got == sorted(i for i, s in zip(ids, split) if s == "train")
    batches = fixed_batches(valid, batch_size=2, max_batches=5)
    assert [len(b) for b in batches] == [2, 1] and {ex["id"] for b in batches for ex in b} == {ids[7], ids[8], ids[20]}
    assert [len(b) for b in fixed_batches(valid, batch_size=2, max_batches=1)] == [2]

    old = table.drop(["split"]).filter(pc.equal(pa.array(split), "train"))  # written before the column existed
    pq.write_table(old, tmp_path / "old.parquet", row_group_size=6)
    with caplog.at_level("WARNING"):
        assert sum(u.num_rows for u in TokenShardSource(str(tmp_path / "old.parquet")).units) == old.num_rows
    assert "no `split` column" in caplog.text
    assert TokenShardSource(str(tmp_path / "old.parquet"), split="valid").units == []
