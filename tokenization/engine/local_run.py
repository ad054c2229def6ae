"""A job's steps in one process, no Ray (tests, benchmarks): the same files as the Ray adapter
(`pipelines/sharded_ray.py`) writes.
"""

from __future__ import annotations

from functools import partial

import pyarrow as pa

from tokenization.engine.duplicates import count_table, resolve_duplicates, scan_ids, winners_from
from tokenization.engine.jobs import JobSpec, read_batches_retrying
from tokenization.engine.output_folder import Progress
from tokenization.engine.writer import ShardWriter
from tokenization.units import Unit


def count_ids(job: JobSpec, units: list[Unit], output: str | None = None, keep: set[str] = frozenset()) -> dict[str, tuple[int, int]]:
    """In-process id pre-pass (the Ray adapter counts hash parts in tasks): {id: (lowest loc, count)}
    of the duplicated ids and of `keep`."""
    return count_table(scan_ids(job, units, None, output).select(["id", "loc"]), keep)


def find_duplicates(job: JobSpec, units: list[Unit]) -> dict[str, tuple[str, int, str]]:
    """{id: (unit key, pos, where)} of the kept occurrence of each duplicated id (read from the input)."""
    return winners_from(((i, loc) for i, (loc, _) in count_ids(job, units).items()), units)


def run_local(job: JobSpec, units: list[Unit], output: str, metadata: dict[bytes, bytes],
              progress: Progress | None = None) -> list[str]:
    """Run a planned job in this process (no Ray): same files as the Ray adapter. Returns shards written.

    Call `sync_output` first when the folder may hold an older listing. `progress` (the driver's, read here
    when not given) is current again on return."""
    progress = progress or Progress.read(output)
    steps = [s.factory() for s in job.steps]
    writer = ShardWriter(output, job.sink, metadata)
    winners, _ = resolve_duplicates(output, units, partial(_count, job, output), partial(_scan, job, output), job.sink.tables,
                                    progress)
    todo, done, written = progress.pending(units), set(progress.done), []
    for unit in todo:
        for batch in read_batches_retrying(job, unit, output, done, winners):
            for step in steps:
                batch.items = step(batch.items)
            written += writer.add(batch)
    progress.reload(todo)
    return written


def _count(job: JobSpec, output: str, units: list[Unit], keep: set[str]) -> dict[str, tuple[int, int]]:
    return count_ids(job, units, output, keep)


def _scan(job: JobSpec, output: str, units: list[Unit], ids: pa.Array | None) -> pa.Table:
    return scan_ids(job, units, ids, output)
