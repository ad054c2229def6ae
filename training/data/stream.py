"""Batch stream and prefetch: endless, length-bucketed, resumable batches of one reader's share.

Nothing here loads a whole data set: examples pass through a bounded bucketing buffer and
batches leave as soon as the buffer fills. Given (seed, epoch, shard) the batch order is
fixed, so a resumed run that skips the batches it already consumed (`StreamState`) sees
exactly what an uninterrupted run would.

    >>> stream = BatchStream(TokenShardSource("out/tokens"), shard=0, n_shards=2, batch_size=8)
    >>> for batch in stream: ...                      # endless: epoch after epoch
    >>> state = stream.state_dict(); stream.load_state_dict(state)   # exact resume
"""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import asdict, dataclass
from typing import Iterator

from training.data.sources import Source
from training.data.units import shard_rows


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
