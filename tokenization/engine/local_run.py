"""A job's steps in one process, no Ray (tests, benchmarks): the same files as the Ray adapter
(`pipelines/sharded_ray.py`) writes.
"""

from __future__ import annotations

from functools import partial

from tokenization.engine.duplicates import record_ids, resolve_duplicates, winners_from
from tokenization.engine.jobs import JobSpec, read_batches
from tokenization.engine.output_folder import Progress
from tokenization.engine.writer import ShardWriter
from tokenization.units import Unit


def count_ids(job: JobSpec, units: list[Unit], output: str | None = None, keep: set[str] = frozenset()) -> dict[str, tuple[int, int]]:
    """In-process id pre-pass (the Ray adapter does it with a distributed groupby): {id: (lowest loc, count)}
    of the duplicated ids and of `keep`."""
    first: dict[str, int] = {}
    n: dict[str, int] = {}
    for unit in units:
        for r in record_ids(job, unit, output):
            first[r["id"]] = min(first.get(r["id"], r["loc"]), r["loc"])
            n[r["id"]] = n.get(r["id"], 0) + 1
    return {i: (first[i], c) for i, c in n.items() if c > 1 or i in keep}


def id_holders(job: JobSpec, units: list[Unit], ids: set[str], output: str | None = None) -> list[tuple[str, int, str]]:
    """(unit key, pos, id) of every record whose id is in `ids` (from the id cache where there is one)."""
    return [(u.key, r["loc"] & 0xFFFFFFFF, r["id"]) for u in units for r in record_ids(job, u, output) if r["id"] in ids]


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
    winners, _ = resolve_duplicates(output, units, partial(_count, job, output), partial(_holders, job, output), job.sink.tables,
                                    progress)
    todo, done, written = progress.pending(units), set(progress.done), []
    for unit in todo:
        for batch in read_batches(job, unit, output, done, winners):
            for step in steps:
                batch.items = step(batch.items)
            written += writer.add(batch)
    progress.reload(todo)
    return written


def _count(job: JobSpec, output: str, units: list[Unit], keep: set[str]) -> dict[str, tuple[int, int]]:
    return count_ids(job, units, output, keep)


def _holders(job: JobSpec, output: str, units: list[Unit], ids: set[str]) -> list[tuple[str, int, str]]:
    return id_holders(job, units, ids, output)
