"""Batch stream, mixture and prefetch: endless, length-bucketed, resumable batches of one reader's share.

Nothing here loads a whole data set: examples pass through a bounded bucketing buffer and
batches leave as soon as the buffer fills. Given (seed, epoch, shard) the batch order is
fixed, so a resumed run that skips the batches it already consumed (`StreamState`) sees
exactly what an uninterrupted run would.

    >>> stream = BatchStream(TokenShardSource("out/tokens"), shard=0, n_shards=2, batch_size=8)
    >>> for batch in stream: ...                      # endless: epoch after epoch
    >>> state = stream.state_dict(); stream.load_state_dict(state)   # exact resume
    >>> mix = MixtureStream({"emilia": stream, "libri": other}, {"emilia": 3, "libri": 1})   # 3:1 batches
"""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Generator, Iterator

from training.data.sources import Source
from training.data.row_groups import shard_rows


@dataclass
class StreamState:
    """Where a reader is: batches already taken from `epoch`, and the examples carried into it.

    `carry` names the examples the previous epoch left over (fewer than a batch) as
    `[unit index, row index in the unit, example index of the row]`: they open this epoch's
    buffer, so nothing is dropped and a source smaller than a batch per reader still
    yields batches. Saved in every checkpoint.
    """

    epoch: int = 0
    batches_done: int = 0
    carry: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class BatchStream:
    """Endless length-bucketed batches of one reader's share of a `Source`.

    Args:
        source: the data set.
        shard, n_shards: this reader (see `shard_rows`).
        batch_size: examples per batch (the micro-batch).
        buffer_size: examples held for bucketing; memory is bounded by it.
        seed: shuffling seed; (seed, epoch, shard) and the carried examples fix the batch order.
    """

    def __init__(self, source: Source, shard: int, n_shards: int, batch_size: int, buffer_size: int = 256, seed: int | str = 0):
        if buffer_size < batch_size:
            raise ValueError(f"buffer_size {buffer_size} < batch_size {batch_size}")
        self.source, self.shard, self.n_shards = source, shard, n_shards
        self.batch_size, self.buffer_size, self.seed = batch_size, buffer_size, seed
        self.state = StreamState()
        self._unit_index = {u: i for i, u in enumerate(source.units)}
        self._carried: tuple[list, list] = ([], [])  # (refs, examples) the last epoch left over, kept to skip a re-read
        self._epoch_rows = 0  # rows this reader got in the epoch last read (0 twice: it gets none, ever)

    def state_dict(self) -> dict:
        return self.state.to_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state = StreamState(**state)

    def epoch_examples(self, epoch: int) -> Iterator[tuple[list[int], dict]]:
        """(ref, example) for this reader's rows of one epoch; ref = [unit index, row index, example index]."""
        self._epoch_rows = 0
        for unit, rows in shard_rows(self.source.units, self.shard, self.n_shards, self.seed, epoch):
            u = self._unit_index[unit]
            for r, row in self.source.read_indexed(unit, rows):
                self._epoch_rows += 1
                for k, ex in enumerate(self.source.examples(row)):
                    yield [u, r, k], ex

    def _carried_examples(self, refs: list[list[int]]) -> list[tuple[list[int], dict]]:
        """The examples `refs` name, in that order (re-read from their row groups after a resume)."""
        if refs == self._carried[0]:
            return list(zip(*self._carried)) if refs else []
        by_unit: dict[int, set[int]] = {}
        for u, r, _ in refs:
            by_unit.setdefault(u, set()).add(r)
        found = {}
        for u, rows in by_unit.items():
            for r, row in self.source.read_indexed(self.source.units[u], sorted(rows)):
                for k, ex in enumerate(self.source.examples(row)):
                    found[(u, r, k)] = ex
        return [(list(ref), found[tuple(ref)]) for ref in refs]

    def epoch_batches(self, epoch: int, carry: list[list[int]] = ()) -> Generator[list[dict], None, list[list[int]]]:
        """One epoch of this reader's batches, the `carry` examples first in the buffer.

        Returns (as the generator's value) the refs of the examples left over, fewer than a
        batch: the next epoch's carry.
        """
        rng = random.Random(f"{self.seed}/{epoch}/{self.shard}")
        buffer = self._carried_examples([list(c) for c in carry])
        for item in self.epoch_examples(epoch):
            buffer.append(item)
            if len(buffer) >= self.buffer_size:
                batches, buffer = self._bucket(buffer, rng)
                yield from batches
        batches, buffer = self._bucket(buffer, rng)
        yield from batches
        self._carried = ([ref for ref, _ in buffer], [ex for _, ex in buffer])
        return self._carried[0]

    def _bucket(self, buffer: list, rng: random.Random) -> tuple[list[list[dict]], list]:
        """(batches, leftover) of (ref, example) pairs: sort by length, cut into batches, shuffle the batches.

        Lengths within a batch stay close, the order of batches is random; the leftover
        (fewer than a batch) goes back into the buffer.
        """
        rng.shuffle(buffer)  # ties in length break differently each epoch
        buffer.sort(key=lambda item: self.source.length(item[1]))
        n_full = len(buffer) - len(buffer) % self.batch_size
        batches = [[ex for _, ex in buffer[i:i + self.batch_size]] for i in range(0, n_full, self.batch_size)]
        rng.shuffle(batches)
        return batches, buffer[n_full:]

    def __iter__(self) -> Iterator[list[dict]]:
        empty_epochs = 0
        while True:
            epoch, skip, carry = self.state.epoch, self.state.batches_done, self.state.carry
            batches, n = self.epoch_batches(epoch, carry), 0
            while True:
                try:
                    batch = next(batches)
                except StopIteration as end:
                    leftover = end.value
                    break
                n += 1
                if n <= skip:
                    continue  # resume: these were consumed before the checkpoint
                self.state = StreamState(epoch, n, carry)
                yield batch
            empty_epochs = empty_epochs + 1 if self._epoch_rows == 0 else 0
            if empty_epochs > 1:
                raise ValueError(f"reader {self.shard}/{self.n_shards} of {self.source.uri} gets no {self.source.split} rows "
                                 "(fewer rows than readers?)")
            self.state = StreamState(epoch + 1, 0, leftover)


class MixtureStream:
    """Endless batches drawn from several `BatchStream`s (one per source) in a seeded, weighted interleave.

    Each micro-batch comes from one source, so every source keeps its own bucketing,
    sharding and epochs: a small source starts its next epoch on its own while a large one
    is still in its first. The source of each draw is picked by smooth weighted round-robin
    (Megatron's blended datasets and nginx pick the same way): every draw adds each source's
    share to its credit, the source with most credit gives the batch and pays 1. So after n
    draws each source has given within about one batch of `share x n` (no random drift), the
    seed only sets the starting credits (each reader its own, so ranks mix sources within a
    step), and the credits plus each source's `StreamState` are the whole state: a resumed
    run continues the exact order, and a changed weight applies from then on without a burst.

    Args:
        streams: source name -> its reader's stream.
        weights: source name -> relative weight (> 0).
        seed, shard: the starting credits come from these.
    """

    def __init__(self, streams: dict[str, BatchStream], weights: dict[str, float], seed: int = 0, shard: int = 0):
        self.streams = streams
        total = sum(weights[n] for n in streams)
        self.shares = {n: weights[n] / total for n in streams}
        rng = random.Random(f"{seed}/{shard}/mix")
        self.credit = {n: rng.random() for n in streams}
        self.rows = dict.fromkeys(streams, 0)  # cumulative rows drawn per source (`rows/<name>`)

    def _pick(self) -> str:
        for n in self.streams:
            self.credit[n] += self.shares[n]
        name = max(self.streams, key=lambda n: self.credit[n])  # ties: the first listed
        self.credit[name] -= 1.0
        return name

    def __iter__(self) -> Iterator[list[dict]]:
        readers = {n: iter(s) for n, s in self.streams.items()}
        while True:
            name = self._pick()
            batch = next(readers[name])
            self.rows[name] += len(batch)
            yield batch

    def state_dict(self) -> dict:
        return {"sources": {n: s.state_dict() for n, s in self.streams.items()}, "credit": dict(self.credit), "rows": dict(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        """Positions of the sources the state names; a source new to it starts fresh, one gone from the config is
        dropped. A one-source state (also one saved before mixtures, `{epoch, batches_done}`) resumes a one-source run
        whatever the folder's name."""
        if "sources" not in state:  # saved before mixtures: the one source's {epoch, batches_done}
            state = {"sources": {next(iter(self.streams)): state}}
        saved = state["sources"]
        if len(saved) == 1 and len(self.streams) == 1:
            rename = {next(iter(self.streams)): next(iter(saved))}
        else:
            rename = {n: n for n in self.streams}
        for n, stream in self.streams.items():
            old = rename[n]
            if old in saved:
                stream.load_state_dict(saved[old])
                self.credit[n] = state.get("credit", {}).get(old, self.credit[n])
                self.rows[n] = state.get("rows", {}).get(old, 0)


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
    """Collates batches of a `BatchStream` (or `MixtureStream`) in a background thread, `depth` batches ahead.

    Yields `(n_examples, collated batch, stream state after this batch)`: the consumer keeps
    the state of the last batch it *used*, so a checkpoint resumes exactly even though the
    thread has read further. Errors in the thread are raised in the consumer.

    Args:
        stream: the batches (consumed only by the thread).
        collate: rows -> model batch (decoding, padding, features).
        depth: batches kept ready; memory is bounded by it.
    """

    _END = object()

    def __init__(self, stream: BatchStream | MixtureStream, collate, depth: int = 2):
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
