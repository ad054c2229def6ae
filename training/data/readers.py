"""Streaming Parquet readers for the three training stages: sharded, length-bucketed, resumable.

Nothing here loads a whole data set: files are read one row group at a time
(`ParquetFile.read_row_group`, only the needed columns), examples pass through a
bounded bucketing buffer, and batches leave as soon as the buffer fills.

Sharding: an epoch's work units are the (file, row group) pairs of every shard under the
folder, shuffled with `(seed, epoch)`. With at least as many units as readers, reader `i`
of `n` takes units `i, i+n, ...`; with fewer (tiny sets), every reader walks all units and
keeps rows `i, i+n, ...`. Either way each row is read by exactly one reader per epoch.
A reader is one (world rank, data-loader worker) pair: `shard = rank * workers + worker`.

Splits: a Source reads one split (`train` by default; `valid` for the validation loss).
Row groups whose `split` statistics rule the split out are never opened; shards written
before the `split` column existed count as all `train` (with a warning).

Determinism: given (seed, epoch, shard) the batch order is fixed, so a resumed run that
skips the batches it already consumed (`StreamState`) sees exactly what an uninterrupted
run would.

    >>> stream = BatchStream(TokenShardSource("out/tokens"), shard=0, n_shards=2, batch_size=8)
    >>> for batch in stream: ...                      # endless: epoch after epoch
    >>> state = stream.state_dict(); stream.load_state_dict(state)   # exact resume
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from dataclasses import asdict, dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenization import storage
from tokenization.audio import decode_audio, resample
from tokenization.schema import codes_to_numpy

WHISPER_SAMPLE_RATE = 16_000
TRAIN = "train"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One row group of one Parquet file: the smallest piece a reader opens."""

    path: str
    row_group: int
    num_rows: int
    has_split: bool = False  # the file has a `split` column (else: every row is train)


def _split_range(md, row_group: int) -> tuple[str, str] | None:
    """(min, max) of the row group's `split` column from its statistics; None when unknown."""
    rg = md.row_group(row_group)
    for j in range(rg.num_columns):
        col = rg.column(j)
        if col.path_in_schema == "split":
            st = col.statistics
            return (st.min, st.max) if st is not None and st.has_min_max else None
    return None


def list_units(uri: str, split: str | None = None) -> list[Unit]:
    """Every (file, row group) of the `*.parquet` files directly under a folder (local or s3://).

    `uri` may also name a single `.parquet` file. Only footers are read. With `split`, row
    groups whose statistics show no row of that split are left out (files without a `split`
    column hold only train rows).
    """
    files = [uri] if uri.endswith(".parquet") else storage.list_files(uri, ".parquet")
    if not files:
        raise FileNotFoundError(f"no .parquet files under {uri}")
    units = []
    for path in files:
        with storage.open_input(path) as f:
            pf = pq.ParquetFile(f)
            md, has_split = pf.metadata, "split" in pf.schema_arrow.names
        if not has_split and split:
            log.warning("%s: no `split` column (written before splits existed): every row counts as train", path)
            if split != TRAIN:
                continue
        for i in range(md.num_row_groups):
            bounds = _split_range(md, i) if has_split and split else None
            if bounds is not None and not bounds[0] <= split <= bounds[1]:
                continue
            units.append(Unit(path, i, md.row_group(i).num_rows, has_split))
    return units


def shard_rows(units: list[Unit], shard: int, n_shards: int, seed: int, epoch: int) -> Iterator[tuple[Unit, list[int] | None]]:
    """(unit, row indices to keep or None for all) for one reader in one epoch.

    Args:
        units: all units of the data set, in a fixed order.
        shard, n_shards: this reader's index and the number of readers (world size x loader workers).
        seed, epoch: the unit order is a permutation drawn from these.
    """
    order = list(units)
    random.Random(f"{seed}/{epoch}").shuffle(order)
    if len(order) >= n_shards:
        for u in order[shard::n_shards]:
            yield u, None
        return
    offset = 0  # global row index over the shuffled units: row r belongs to reader r % n_shards
    for u in order:
        keep = [i for i in range(u.num_rows) if (offset + i) % n_shards == shard]
        offset += u.num_rows
        if keep:
            yield u, keep


def read_unit(unit: Unit, columns: list[str] | None, rows: list[int] | None) -> pa.Table:
    with storage.open_input(unit.path) as f:
        table = pq.ParquetFile(f).read_row_group(unit.row_group, columns=columns)
    return table.take(pa.array(rows, pa.int64())) if rows is not None else table


class Source:
    """A data set of Parquet shards and how its rows become training examples.

    Subclasses name the columns they need and turn one Arrow row into zero or more
    examples (dicts the stage's collator takes), each with a bucketing `length`.
    """

    columns: list[str] | None = None

    def __init__(self, uri: str, split: str | None = TRAIN):
        self.uri, self.split = uri, split  # split None: every row
        self.units = list_units(uri, split)

    def read(self, unit: Unit, rows: list[int] | None) -> list[dict]:
        """The rows of one unit (or the given ones) that belong to this source's split."""
        if not unit.has_split or self.split is None:
            return read_unit(unit, self.columns, rows).to_pylist()
        columns = None if self.columns is None else [*self.columns, "split"]
        table = read_unit(unit, columns, rows)
        return table.filter(pc.equal(table.column("split"), self.split)).to_pylist()

    def examples(self, row: dict) -> Iterator[dict]:
        raise NotImplementedError

    @staticmethod
    def length(example: dict) -> int:
        raise NotImplementedError


class TokenShardSource(Source):
    """Stage 1: token shards (`text`, `codes` [T, K], `n_frames`) -> TTS examples."""

    columns = ["utt_id", "text", "codes", "n_frames"]

    def __init__(self, uri: str, max_frames: int = 0, split: str | None = TRAIN):
        super().__init__(uri, split)
        self.max_frames = max_frames

    def examples(self, row: dict) -> Iterator[dict]:
        codes = codes_to_numpy(row["codes"])  # [T, K] uint16
        if self.max_frames and len(codes) > self.max_frames:
            return
        yield {"id": row["utt_id"], "text": row["text"], "codes": codes, "n_frames": len(codes)}

    @staticmethod
    def length(example: dict) -> int:
        return example["n_frames"]


class DialogueSource(Source):
    """Stages 2 and 3: dialogue shards -> one example per (user turn, next assistant turn).

    Stage 2 examples: `user_audio` (float32, 16 kHz) and `assistant_text`.
    Stage 3 examples: the same plus `assistant_codes` [T, K] (pairs whose assistant turn
    has no codes are skipped).
    """

    columns = ["dialogue_id", "turns"]

    def __init__(self, uri: str, with_codes: bool, max_audio_s: float = 0.0, max_frames: int = 0, split: str | None = TRAIN):
        super().__init__(uri, split)
        self.with_codes = with_codes
        self.max_audio_s = max_audio_s
        self.max_frames = max_frames

    def examples(self, row: dict) -> Iterator[dict]:
        turns = row["turns"] or []
        for i, (user, reply) in enumerate(zip(turns, turns[1:])):
            if user["role"] != "user" or reply["role"] != "assistant" or not user.get("audio_flac"):
                continue
            if self.max_audio_s and (user.get("duration_s") or 0) > self.max_audio_s:
                continue
            ex = {"id": f"{row['dialogue_id']}/{i}", "assistant_text": reply["text"]}
            if self.with_codes:
                if reply.get("codes") is None:
                    continue
                ex["assistant_codes"] = codes_to_numpy(reply["codes"])
                if self.max_frames and len(ex["assistant_codes"]) > self.max_frames:
                    continue
                ex["n_frames"] = len(ex["assistant_codes"])
            samples, rate = decode_audio(user["audio_flac"], ex["id"])
            ex["user_audio"] = resample(samples, rate, WHISPER_SAMPLE_RATE)
            yield ex

    @staticmethod
    def length(example: dict) -> int:
        # audio in 80 ms steps (the codec frame rate) plus reply frames: similar lengths pad little
        return len(example["user_audio"]) // 1280 + example.get("n_frames", 0)


@dataclass
class StreamState:
    """Where a reader is: batches already taken from `epoch`. Saved in every checkpoint."""

    epoch: int = 0
    batches_done: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class BatchStream:
    """Endless length-bucketed batches of one reader's share of a `Source`.

    Args:
        source: the data set.
        shard, n_shards: this reader (see `shard_rows`).
        batch_size: examples per batch (the micro-batch).
        buffer_size: examples held for bucketing; memory is bounded by it.
        seed: shuffling seed; (seed, epoch, shard) fix the batch order.
    """

    def __init__(self, source: Source, shard: int, n_shards: int, batch_size: int, buffer_size: int = 256, seed: int = 0):
        if buffer_size < batch_size:
            raise ValueError(f"buffer_size {buffer_size} < batch_size {batch_size}")
        self.source, self.shard, self.n_shards = source, shard, n_shards
        self.batch_size, self.buffer_size, self.seed = batch_size, buffer_size, seed
        self.state = StreamState()

    def state_dict(self) -> dict:
        return self.state.to_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state = StreamState(**state)

    def epoch_examples(self, epoch: int) -> Iterator[dict]:
        for unit, rows in shard_rows(self.source.units, self.shard, self.n_shards, self.seed, epoch):
            for row in self.source.read(unit, rows):
                yield from self.source.examples(row)

    def epoch_batches(self, epoch: int) -> Iterator[list[dict]]:
        """One epoch of this reader's batches; a last partial batch is dropped."""
        rng = random.Random(f"{self.seed}/{epoch}/{self.shard}")
        buffer: list[dict] = []
        for ex in self.epoch_examples(epoch):
            buffer.append(ex)
            if len(buffer) >= self.buffer_size:
                batches, buffer = self._bucket(buffer, rng)
                yield from batches
        yield from self._bucket(buffer, rng)[0]

    def _bucket(self, buffer: list[dict], rng: random.Random) -> tuple[list[list[dict]], list[dict]]:
        """(batches, leftover): sort by length, cut into batches, shuffle the batches.

        Lengths within a batch stay close, the order of batches is random; the leftover
        (fewer than a batch) goes back into the buffer.
        """
        rng.shuffle(buffer)  # ties in length break differently each epoch
        buffer.sort(key=self.source.length)
        n_full = len(buffer) - len(buffer) % self.batch_size
        batches = [buffer[i:i + self.batch_size] for i in range(0, n_full, self.batch_size)]
        rng.shuffle(batches)
        return batches, buffer[n_full:]

    def __iter__(self) -> Iterator[list[dict]]:
        empty_epochs = 0
        while True:
            skip, n = self.state.batches_done, 0
            for n, batch in enumerate(self.epoch_batches(self.state.epoch), start=1):
                if n <= skip:
                    continue  # resume: these were consumed before the checkpoint
                self.state.batches_done = n
                yield batch
            empty_epochs = empty_epochs + 1 if n == 0 else 0
            if empty_epochs > 1:
                raise ValueError(f"reader {self.shard}/{self.n_shards} of {self.source.uri} gets no full batch of {self.batch_size}")
            self.state = StreamState(self.state.epoch + 1, 0)


def make_source(stage: int, uri: str, max_frames: int = 0, max_audio_s: float = 0.0, split: str = TRAIN) -> Source:
    """The Source a stage reads: 1 -> token shards, 2 -> speech->text pairs, 3 -> dialogue pairs with codes."""
    if stage == 1:
        return TokenShardSource(uri, max_frames=max_frames, split=split)
    if stage in (2, 3):
        return DialogueSource(uri, with_codes=stage == 3, max_audio_s=max_audio_s, max_frames=max_frames, split=split)
    raise ValueError(f"stage must be 1, 2 or 3, not {stage}")


def fixed_batches(source: Source, batch_size: int, max_batches: int) -> list[list[dict]]:
    """The first `max_batches` batches of a source in stored order, the last one possibly partial.

    For the validation loss: every rank gets the same list (no shuffling, no sharding), so
    ranks can split it by index and still agree on the number of forward passes.
    """
    batches: list[list[dict]] = [[]]
    for unit in source.units:
        for row in source.read(unit, None):
            for ex in source.examples(row):
                if len(batches[-1]) == batch_size:
                    if len(batches) == max_batches:
                        return batches
                    batches.append([])
                batches[-1].append(ex)
    return [b for b in batches if b]


def loader_shard(rank: int, world_size: int, worker_id: int = 0, num_workers: int = 1) -> tuple[int, int]:
    """(shard, n_shards) of one data-loader worker of one rank."""
    return rank * num_workers + worker_id, world_size * num_workers


class Prefetcher:
    """Collates batches of a `BatchStream` in a background thread, `depth` batches ahead.

    Yields `(n_examples, collated batch, stream state after this batch)`: the consumer keeps
    the state of the last batch it *used*, so a checkpoint resumes exactly even though the
    thread has read further. Errors in the thread are raised in the consumer.

    Args:
        stream: the batches (consumed only by the thread).
        collate: rows -> model batch (decoding, padding, features).
        depth: batches kept ready; memory is bounded by it.
    """

    _END = object()

    def __init__(self, stream: BatchStream, collate, depth: int = 2):
        self.stream, self.collate = stream, collate
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            for rows in self.stream:
                item = (len(rows), self.collate(rows), self.stream.state_dict())
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.5)
                        break
                    except queue.Full:  # the consumer is busy: check for stop, retry
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.queue.put(exc)
        self.queue.put(self._END)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
