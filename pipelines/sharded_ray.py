"""The one Ray adapter of the sharded-job engine (`tokenization/engine/`), used by tokenize and filter, and the
driver sequence both run (`run_sharded_job`: run id, output folder, sync, run, manifest, summary).

    units (driver) -> [id pre-pass when the listing changed: Ray Data groupby over the units' ids (cached
                       per unit), only duplicated ids come back]
    -> read (a Ray task per unit, streaming batches) -> load (a task per batch) -> each job step (actor pool)
    -> one writer actor
    -> units whose shards are missing (a killed writer, a failed run) run again, up to `attempts` times.

The driver holds the unit listing and the duplicated ids, never every row or every id, and lists `_progress/`
once per run (`Progress`): what a run wrote is read back per unit that ran.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

import ray
from tqdm import tqdm

from tokenization.engine.duplicates import duplicates_current, record_ids, resolve_duplicates
from tokenization.engine.jobs import Batch, JobSpec, load_batch, pack, read_batches, unpack
from tokenization.engine.output_folder import Progress, compute_run_id, prepare_output, sync_output
from tokenization.engine.writer import ShardWriter, write_manifest
from tokenization.schema import REJECTS
from tokenization.units import Unit


@contextmanager
def _block_bytes(n: int):
    """Datasets created inside get this target block size (a dataset keeps a copy of the context)."""
    ctx = ray.data.DataContext.get_current()
    before, ctx.target_max_block_size = ctx.target_max_block_size, n
    try:
        yield
    finally:
        ctx.target_max_block_size = before


@dataclass
class RunStats:
    shards_written: int  # done marks that this job created
    shards_skipped: int  # done marks found at the start


def _read_task(row: dict, job: JobSpec, output: str, done_ref, winners_ref) -> Iterator[dict]:
    """One unit: a generator, so Ray Data streams its batches on while the rest of the unit is read."""
    unit = Unit.from_dict(json.loads(row["unit"]))
    done, winners = _get(done_ref), _get(winners_ref)
    for b in read_batches(job, unit, output, done, winners, load=False):
        yield {"payload": pack(b), "rows": len(b.items)}


def _load_task(row: dict, job: JobSpec) -> dict:
    return {**row, "payload": pack(load_batch(job, unpack(row["payload"])))}


def _get(ref):
    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def _ids_task(row: dict, job: JobSpec, output: str) -> list[dict]:
    return list(record_ids(job, Unit.from_dict(json.loads(row["unit"])), output))


def _holders_task(row: dict, job: JobSpec, output: str, ids_ref) -> list[dict]:
    unit, ids = Unit.from_dict(json.loads(row["unit"])), _get(ids_ref)
    return [{"key": unit.key, "pos": r["loc"] & 0xFFFFFFFF, "id": r["id"]} for r in record_ids(job, unit, output) if r["id"] in ids]


class _StepActor:
    """Runs one job step (built once per actor: it loads a model) on pickled batches."""

    def __init__(self, factory):
        self.fn = factory()

    def __call__(self, batch: dict) -> dict:
        out = []
        for payload in batch["payload"]:
            b: Batch = unpack(payload)
            b.items = self.fn(b.items)
            out.append(pack(b))
        return {**batch, "payload": out}


class _WriterActor:
    def __init__(self, output: str, sink, metadata: dict):
        self.writer = ShardWriter(output, sink, metadata)

    def __call__(self, batch: dict) -> dict:
        written, rows = [], 0
        for payload in batch["payload"]:
            b = unpack(payload)
            rows += len(b.items)
            written += self.writer.add(b)
        return {"rows": [rows], "written": [len(written)]}


def _unit_items(units: list[Unit]) -> ray.data.Dataset:
    items = [{"unit": json.dumps(u.to_dict())} for u in units]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def count_ids(job: JobSpec, output: str, cpus: float, units: list[Unit], keep: set[str]) -> dict[str, tuple[int, int]]:
    """Distributed id pre-pass: ids are read in tasks (from each unit's id cache when it has one), grouped by
    Ray Data; only duplicated ids (and `keep` ids) reach the driver: {id: (lowest loc, count)}."""
    from ray.data.aggregate import Count, Min

    ids = _unit_items(units).flat_map(_ids_task, fn_kwargs={"job": job, "output": output}, num_cpus=cpus)
    grouped = ids.groupby("id").aggregate(Count(), Min("loc"))
    keep = frozenset(keep)  # ids that were duplicated before: shipped with the filter (few)
    rows = grouped.filter(lambda r: r["count()"] > 1 or r["id"] in keep).take_all()
    return {r["id"]: (int(r["min(loc)"]), int(r["count()"])) for r in rows}


def id_holders(job: JobSpec, output: str, cpus: float, units: list[Unit], ids: set[str]) -> list[tuple[str, int, str]]:
    """(unit key, pos, id) of the records holding `ids`, read in tasks from the units' id caches."""
    rows = _unit_items(units).flat_map(_holders_task, fn_kwargs={"job": job, "output": output, "ids_ref": ray.put(set(ids))},
                                       num_cpus=cpus).take_all()
    return [(r["key"], int(r["pos"]), r["id"]) for r in rows]


def run_job(job: JobSpec, units: list[Unit], output: str, metadata: dict[bytes, bytes], *, progress: Progress | None = None,
            read_cpus: float = 0.25, attempts: int = 3, label: str = "") -> RunStats:
    """Run every unfinished unit of a planned job on Ray; rerun units a failure left unfinished.

    A killed writer actor loses the rows it buffered; its shards then have no done mark, so their
    units run again (done shards are skipped), and the output ends as a clean run's would.
    `progress` (the driver's, read here when not given) is current again on return.
    """
    progress = progress or Progress.read(output)
    winners, affected = resolve_duplicates(output, units, partial(count_ids, job, output, read_cpus),
                                           partial(id_holders, job, output, read_cpus), job.sink.tables, progress)
    if affected:
        print(f"[{label}] {len(affected)} unchanged units run again: a duplicate id's kept occurrence moved", file=sys.stderr)
    before = set(progress.done)
    winners_ref = ray.put(winners)
    attempt, error = 0, None
    while attempt < attempts:
        todo = progress.pending(units)
        if not todo:
            break
        attempt += 1
        if attempt > 1:
            print(f"[{label}] {len(todo)} units unfinished ({error or 'a writer lost its buffered rows'}); running them again",
                  file=sys.stderr)
        try:
            _execute(job, todo, output, metadata, ray.put(set(progress.done)), winners_ref, read_cpus, label)
            error = None
        except (ray.exceptions.RayError, RuntimeError) as exc:  # an actor or task died beyond Ray's own retries
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if attempt == attempts:
                raise
        progress.reload(todo)  # what this attempt wrote, read per unit (no listing)
    return RunStats(len(progress.done - before), len(before))


def run_sharded_job(label: str, output: str, units: list[Unit], config: dict, tables: tuple[str, ...], *, overwrite: bool,
                    start: Callable[[str, Progress], RunStats], manifest_extra: dict, t0: float) -> dict:
    """The driver sequence tokenize and filter share, after their own checks; returns the summary it printed.

    run id -> `_run.json` (another config refused) -> one listing of `_progress/` -> sync (retire changed and
    removed units) -> `start(run_id, progress)` when anything is pending (it starts Ray, builds the job and
    calls `run_job`) -> `_manifest.json` -> console line and summary JSON; counts that do not add up exit
    non-zero (`SystemExit` naming them).
    """
    run_id = compute_run_id(config)
    prepare_output(output, run_id, config, overwrite, tables)
    progress = Progress.read(output)  # the run's one listing of `_progress/`, passed along from here
    plan = sync_output(output, units, tables, progress)  # retires changed and removed units
    todo = progress.pending(units)
    print(f"[{label}] run {run_id}: {len(units)} input units ({len(units) - len(todo)} already done); {plan.line()}",
          file=sys.stderr)
    t_pipe = time.time()
    written, skipped = 0, len(progress.done)
    if todo or not duplicates_current(output, units):
        stats = start(run_id, progress)
        written, skipped = stats.shards_written, stats.shards_skipped
    pipeline_s = time.time() - t_pipe

    c = write_manifest(output, run_id, units, tables, manifest_extra, progress)["counts"]
    rejects = REJECTS in tables
    summary = {"output": output, "run_id": run_id, "rows_in": c["in"], "kept": c["kept"],
               **({"rejected": c["rejected"]} if rejects else {}), "quarantined": c["quarantined"],
               **({"hours": c["hours"]} if "hours" in c else {}), "shards_written": written, "shards_skipped": skipped,
               **plan.counts(), "elapsed_s": round(time.time() - t0, 2)}
    if "hours" in c:  # tokenize: throughput of the pipeline itself
        summary.update(pipeline_s=round(pipeline_s, 2),
                       audio_seconds_per_second=round(c["hours"] * 3600 / max(pipeline_s, 1e-9), 2))
    print(f"[{label}] rows in {c['in']} = kept {c['kept']}" + (f" + rejected {c['rejected']}" if rejects else "")
          + f" + quarantined {c['quarantined']}{'' if 'error' not in c else '  MISMATCH: ' + c['error']}", file=sys.stderr)
    print(json.dumps(summary))
    if "error" in c:
        raise SystemExit(c["error"])
    return summary


def _execute(job: JobSpec, todo: list[Unit], output: str, metadata: dict, done_ref, winners_ref, read_cpus: float,
             label: str) -> None:
    with _block_bytes(1):  # every batch its own block: Ray Data spreads blocks, so one big unit still feeds every worker
        ds = _unit_items(todo).flat_map(_read_task, fn_kwargs={"job": job, "output": output, "done_ref": done_ref,
                                                               "winners_ref": winners_ref}, num_cpus=read_cpus)
    ds = ds.map(_load_task, fn_kwargs={"job": job}, num_cpus=read_cpus)
    for step in job.steps:
        gpu = {"num_gpus": step.gpus} if step.gpus else {}
        ds = ds.map_batches(_StepActor, batch_size=1, batch_format="numpy", fn_constructor_kwargs={"factory": step.factory},
                            compute=ray.data.ActorPoolStrategy(size=max(1, step.actors)), num_cpus=step.cpus, **gpu)
    ds = ds.map_batches(_WriterActor, batch_size=None, batch_format="numpy",
                        fn_constructor_kwargs={"output": output, "sink": job.sink, "metadata": metadata},
                        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0)
    with tqdm(unit="row", desc=label or job.name, file=sys.stderr, mininterval=2) as bar:
        shards = 0
        for summary in ds.iter_rows():
            shards += int(summary["written"])
            bar.update(int(summary["rows"]))
            bar.set_postfix(shards=shards)
