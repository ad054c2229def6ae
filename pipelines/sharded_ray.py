"""The one Ray adapter of the sharded-job engine (`tokenization/engine/`), used by tokenize and filter, and the
driver sequence both run (`run_sharded_job`: run id, output folder, sync, run, manifest, summary).

    units (driver) -> [id pre-pass when the listing changed: Ray tasks count every unit's cached ids by hash
                       part, or, when few units are new or changed, read only their ids and look them up in
                       the other units' id caches; only duplicated ids come back]
    -> read + load (a Ray task per unit, streaming blocks of whole batches) -> each job step (actor pool)
    -> one writer actor
    -> units whose shards are missing (a killed writer, a failed run) run again, up to `attempts` times.

Storage faults (docs/faults.md): a transient error is retried where it happens (a storage call, an item's
load, a unit's read: `tokenization.storage.retrying`), and every task and actor call reports the retries its
process made with its result, so the summary counts them across processes (`storage_retries`). A permanent
one (`StorageError`: full disk, access denied, no bucket) stops the job at once, never a rerun of units.

The driver holds the unit listing and the duplicated ids (and, on an incremental pre-pass, the new units'
ids), never every row or every id, and lists `_progress/` once per run (`Progress`): what a run wrote is read
back per unit that ran. Its memory and the writer's stay flat from 100k to 1M rows, and the engine costs
about 0.35 CPU ms per row (`benchmarks/engine_scale.py`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable, Iterator

import pyarrow as pa
import ray
from tqdm import tqdm

from tokenization import storage
from tokenization.engine.duplicates import (SCAN_SCHEMA, as_counts, duplicated_ids, duplicates_current, id_table,
                                             id_part, resolve_duplicates, scan_ids)
from tokenization.engine.jobs import BLOCK_BYTES, BLOCK_ROWS, Batch, JobSpec, pack, read_batches_retrying, unpack
from tokenization.engine.output_folder import Progress, compute_run_id, prepare_output, sync_output
from tokenization.engine.writer import ShardWriter, write_manifest
from tokenization.schema import REJECTS
from tokenization.units import Unit


log = logging.getLogger(__name__)

SCAN_TASKS = 64  # tasks of an id scan (each reads a group of units' id caches)
LOOKUP_THREADS = 16  # id-cache reads in flight in the driver (S3 GETs)
COUNT_PARTS = 8  # hash parts of the id count, at most (each part's task reads every id cache)


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
    storage_retries: int = 0  # retries after transient storage errors in tasks and actors (the driver's are apart)


@dataclass
class _Tally:
    """Storage retries that tasks and actors reported with their results."""

    retries: int = 0

    def results(self, pairs: list[tuple]) -> list:
        """[(result, retries)] of tasks -> their results, the retries counted."""
        self.retries += sum(n for _, n in pairs)
        return [r for r, _ in pairs]


def _with_retries(fn: Callable, *args):
    """(fn(*args), storage retries this process made meanwhile): how a task reports them to the driver."""
    before = storage.retries()
    return fn(*args), storage.retries() - before


def _read_task(row: dict, job: JobSpec, output: str, done_ref, winners_ref, block_rows: int) -> Iterator[dict]:
    """One unit, read and loaded: a generator of blocks of whole batches, so Ray Data streams them on while the
    rest of the unit is read. A block ends at `block_rows` rows or `BLOCK_BYTES` of loaded audio: each
    block costs Ray Data scheduling time and driver memory whatever its size, and long clips must not make
    blocks of gigabytes."""
    unit = Unit.from_dict(json.loads(row["unit"]))
    done, winners = _get(done_ref), _get(winners_ref)
    block: list[Batch] = []
    rows = size = 0
    reported = storage.retries()  # each block carries the retries made since the one before

    def out() -> dict:
        nonlocal reported
        retries, reported = storage.retries() - reported, storage.retries()
        return {"payload": pack(block), "rows": rows, "retries": retries}

    for b in read_batches_retrying(job, unit, output, done, winners):
        block.append(b)
        rows += len(b.items)
        size += sum(_audio_bytes(i.audio) for i in b.items)
        if rows >= block_rows or size >= BLOCK_BYTES:
            yield out()
            block, rows, size = [], 0, 0
    if block:
        yield out()


def _spread_block_rows(job: JobSpec, n_units: int, block_rows: int) -> int:
    """A block per batch when there are fewer units than twice a step's actors, else `block_rows`.

    A block goes to one actor whole: a small job's few units, in blocks of up to `block_rows`, would keep
    one encoder busy while the others (another node's) wait. Units hold thousands of rows at most, so a few
    units are few rows and a block each batch costs little there.
    """
    actors = max((step.actors for step in job.steps), default=1)
    return 1 if n_units < 2 * actors else block_rows


def _audio_bytes(audio) -> int:
    """Size of an item's loaded audio: decoded samples (an array) or encoded bytes."""
    return int(audio.nbytes) if hasattr(audio, "nbytes") else len(audio) if isinstance(audio, (bytes, bytearray)) else 0


def _get(ref):
    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def _cache_task(units: list[str], job: JobSpec, output: str) -> tuple[int, int]:
    """Read the units' ids once, into their id caches (units that have one are not read). Returns (ids, retries)."""
    return _with_retries(lambda: sum(id_table(job, Unit.from_dict(json.loads(u)), output).num_rows for u in units))


def _count_task(units: list[str], job: JobSpec, output: str, parts: int, part: int, keep: pa.Array) -> tuple[pa.Table, int]:
    """Duplicated ids of hash part `part`, from every unit's id cache (only that part is kept in memory);
    (them, retries)."""
    def count() -> pa.Table:
        ids = [id_part(id_table(job, Unit.from_dict(json.loads(u)), output), parts, part) for u in units]
        return duplicated_ids(pa.concat_tables(ids), keep)

    return _with_retries(count)


def _scan_task(units: list[str], job: JobSpec, output: str) -> tuple[pa.Table, int]:
    return _with_retries(scan_ids, job, [Unit.from_dict(json.loads(u)) for u in units], None, output)


class _StepActor:
    """Runs one job step (built once per actor: it loads a model) on blocks of pickled batches."""

    def __init__(self, factory):
        self.fn = factory()

    def __call__(self, batch: dict) -> dict:
        out = []
        for payload in batch["payload"]:
            block = unpack(payload)
            for b in block:
                b.items = self.fn(b.items)
            out.append(pack(block))
        return {**batch, "payload": out}


def _trim_heap() -> None:
    """Hand freed memory back to the OS: glibc's arenas and Arrow's pool keep it otherwise, and the driver and
    the writer live as long as the job, so their RSS would creep with the rows that passed through them."""
    pa.default_memory_pool().release_unused()
    if _libc() is not None:
        _libc().malloc_trim(0)


@lru_cache(maxsize=1)
def _libc():
    """glibc, loaded once (None where there is none, e.g. macOS: nothing to trim)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


class _WriterActor:
    def __init__(self, output: str, sink, metadata: dict):
        self.writer = ShardWriter(output, sink, metadata)

    def __call__(self, batch: dict) -> dict:
        written, rows, before = [], 0, storage.retries()
        for payload in batch["payload"]:
            for b in unpack(payload):
                rows += len(b.items)
                written += self.writer.add(b)
        if written:
            _trim_heap()
        # the readers' retries ride along with their blocks; the writer adds its own
        retries = int(sum(batch["retries"])) + storage.retries() - before
        return {"rows": [rows], "written": [len(written)], "retries": [retries]}


def _unit_items(units: list[Unit]) -> ray.data.Dataset:
    items = [{"unit": json.dumps(u.to_dict())} for u in units]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def count_ids(job: JobSpec, output: str, cpus: float, tally: _Tally, units: list[Unit], keep: set[str]) -> dict[str, tuple[int, int]]:
    """Distributed id pre-pass: {id: (lowest loc, count)} of the duplicated ids (and of `keep` ids).

    Tasks fill the units' id caches (reading only units without one); then one task per hash part reads
    every cache, keeps that part's ids and counts them; only duplicated ids reach the driver. No shuffle
    objects: a Ray Data groupby held about 80 MB more in the driver at a million ids, and small task results
    are kept in the driver's own memory, while its memory must not grow with the corpus."""
    if not units:
        return {}
    items, job_ref = [json.dumps(u.to_dict()) for u in units], ray.put(job)
    _in_groups(_cache_task, items, job_ref, output, cpus, tally)
    parts = max(1, min(COUNT_PARTS, int(ray.cluster_resources().get("CPU", 1))))
    count = ray.remote(num_cpus=cpus)(_count_task)
    keep_ref = ray.put(pa.array(sorted(keep), pa.string()))  # ids that were duplicated before (few)
    return as_counts(pa.concat_tables(tally.results(ray.get([count.remote(items, job_ref, output, parts, p, keep_ref)
                                                              for p in range(parts)]))))


def scan_units(job: JobSpec, output: str, cpus: float, tally: _Tally, units: list[Unit], ids: pa.Array | None) -> pa.Table:
    """`scan_ids` of the units. Every record (`ids` None: new units, read from the input) in Ray tasks, a group
    of units each; a lookup of `ids` in the driver, with I/O threads: it reads id caches only (one small
    Parquet file per unit, an Arrow `is_in` each), cheaper than starting task workers for it."""
    if not units:
        return SCAN_SCHEMA.empty_table()
    if ids is not None:
        with ThreadPoolExecutor(LOOKUP_THREADS) as pool:
            return pa.concat_tables(list(pool.map(lambda u: scan_ids(job, [u], ids, output), units)))
    return pa.concat_tables(_in_groups(_scan_task, [json.dumps(u.to_dict()) for u in units], ray.put(job), output, cpus, tally))


def _in_groups(fn: Callable, items: list[str], job_ref, output: str, cpus: float, tally: _Tally) -> list:
    """`fn(group, job, output)` over the units (JSON) in at most `SCAN_TASKS` Ray tasks of a group each; their
    results (each task returns (result, retries): `tally` counts the retries)."""
    task, per = ray.remote(num_cpus=cpus)(fn), -(-len(items) // SCAN_TASKS)
    return tally.results(ray.get([task.remote(items[i:i + per], job_ref, output) for i in range(0, len(items), per)]))


def run_job(job: JobSpec, units: list[Unit], output: str, metadata: dict[bytes, bytes], *, progress: Progress | None = None,
            read_cpus: float = 0.25, attempts: int = 3, label: str = "", block_rows: int = BLOCK_ROWS) -> RunStats:
    """Run every unfinished unit of a planned job on Ray; rerun units a failure left unfinished.

    A killed writer actor loses the rows it buffered; its shards then have no done mark, so their
    units run again (done shards are skipped), and the output ends as a clean run's would.
    `progress` (the driver's, read here when not given) is current again on return.
    """
    progress = progress or Progress.read(output)
    tally = _Tally()
    winners, affected = resolve_duplicates(output, units, partial(count_ids, job, output, read_cpus, tally),
                                           partial(scan_units, job, output, read_cpus, tally), job.sink.tables, progress)
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
            tally.retries += _execute(job, todo, output, metadata, ray.put(set(progress.done)), winners_ref, read_cpus, label,
                                      block_rows)
            error = None
        except (ray.exceptions.RayError, RuntimeError) as exc:  # an actor or task died beyond Ray's own retries
            permanent = _storage_error(exc)
            if permanent is not None:  # a full disk takes no rerun: stop now, in one line (the trace: the log file)
                log.info("%s stopped on a storage error", label, exc_info=exc)
                raise permanent from None
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if attempt == attempts:
                raise
            tally.retries += int(_transient(exc))  # the units run again below
        progress.reload(todo)  # what this attempt wrote, read per unit (no listing)
    return RunStats(len(progress.done - before), len(before), tally.retries)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: Ray's task errors keep the worker's exception in `cause`, Ray Data chains it."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]


def _storage_error(exc: BaseException) -> storage.StorageError | None:
    """The permanent storage error (`StorageError`) a Ray failure carries, else None."""
    return next((e for e in _causes(exc) if type(e) is storage.StorageError), None)


def _transient(exc: BaseException) -> bool:
    return any(storage.is_transient(e) for e in _causes(exc))


def _named(error: storage.StorageError, output: str) -> storage.StorageError:
    """A write under the output folder names the folder first: that is what the user frees or fixes."""
    if error.uri.startswith(output.rstrip("/") + "/") and not error.uri.startswith("--output"):
        return storage.StorageError(f"--output {output}", f"{error.reason} (writing {error.uri[len(output.rstrip('/')) + 1:]}); "
                                    "rerun the same command once that is fixed: done shards are kept")
    return error


def run_sharded_job(label: str, output: str, units: list[Unit], config: dict, tables: tuple[str, ...], *, overwrite: bool,
                    start: Callable[[str, Progress], RunStats], manifest_extra: dict, t0: float) -> dict:
    """The driver sequence tokenize and filter share, after their own checks; returns the summary it printed.

    killed writers' temporary files swept -> run id -> `_run.json` (another config refused) -> one listing of
    `_progress/` -> sync (retire changed and removed units) -> `start(run_id, progress)` when anything is
    pending (it starts Ray, builds the job and calls `run_job`) -> `_manifest.json` -> console line and summary
    JSON (with `storage_retries`: the driver's, the tasks' and the actors'); counts that do not add up exit
    non-zero (`SystemExit` naming them). A permanent storage error raises `StorageError` (one line, naming
    `--output` when the failed write was under it; the trace goes to the log file).
    """
    try:
        return _run_sharded_job(label, output, units, config, tables, overwrite=overwrite, start=start,
                                manifest_extra=manifest_extra, t0=t0)
    except storage.StorageError as exc:  # one line on the console; the trace in the log file
        log.info("%s stopped on a storage error", label, exc_info=exc)
        raise _named(exc, output) from None


def _run_sharded_job(label: str, output: str, units: list[Unit], config: dict, tables: tuple[str, ...], *, overwrite: bool,
                     start: Callable[[str, Progress], RunStats], manifest_extra: dict, t0: float) -> dict:
    run_id = compute_run_id(config)
    retries_before = storage.retries()  # the driver's own; tasks and actors report theirs in `RunStats`
    swept = storage.sweep_temp_files(output)  # killed writers' temporary files (no writer of this run has started)
    if swept:
        log.info("%s: removed %d temporary files of killed writes", output, swept)
    prepare_output(output, run_id, config, overwrite, tables)
    progress = Progress.read(output)  # the run's one listing of `_progress/`, passed along from here
    plan = sync_output(output, units, tables, progress)  # retires changed and removed units
    todo = progress.pending(units)
    print(f"[{label}] run {run_id}: {len(units)} input units ({len(units) - len(todo)} already done); {plan.line()}",
          file=sys.stderr)
    t_pipe = time.time()
    written, skipped, retries = 0, len(progress.done), 0
    if todo or not duplicates_current(output, units):
        stats = start(run_id, progress)
        written, skipped, retries = stats.shards_written, stats.shards_skipped, stats.storage_retries
    pipeline_s = time.time() - t_pipe

    c = write_manifest(output, run_id, units, tables, manifest_extra, progress)["counts"]
    rejects = REJECTS in tables
    summary = {"output": output, "run_id": run_id, "rows_in": c["in"], "kept": c["kept"],
               **({"rejected": c["rejected"]} if rejects else {}), "quarantined": c["quarantined"],
               **({"hours": c["hours"]} if "hours" in c else {}), "shards_written": written, "shards_skipped": skipped,
               **plan.counts(), "storage_retries": retries + storage.retries() - retries_before,
               "elapsed_s": round(time.time() - t0, 2)}
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
             label: str, block_rows: int) -> int:
    """One pass over the units `todo`; returns the storage retries its tasks and actors reported."""
    block_rows = _spread_block_rows(job, len(todo), block_rows)
    # A step's own exception reaches the driver (not Ray Data's UserCodeException, whose pickled copy loses its
    # cause): a `StorageError` must be seen there to stop the job instead of rerunning units into a full disk.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    with _block_bytes(1):  # every yielded row its own block (`block_rows` rows)
        ds = _unit_items(todo).flat_map(_read_task, fn_kwargs={"job": job, "output": output, "done_ref": done_ref,
                                                               "winners_ref": winners_ref, "block_rows": block_rows}, num_cpus=read_cpus)
    for step in job.steps:
        gpu = {"num_gpus": step.gpus} if step.gpus else {}
        ds = ds.map_batches(_StepActor, batch_size=1, batch_format="numpy", fn_constructor_kwargs={"factory": step.factory},
                            compute=ray.data.ActorPoolStrategy(size=max(1, step.actors)), num_cpus=step.cpus, **gpu)
    ds = ds.map_batches(_WriterActor, batch_size=None, batch_format="numpy",
                        fn_constructor_kwargs={"output": output, "sink": job.sink, "metadata": metadata},
                        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0)
    retries = 0
    with tqdm(unit="row", desc=label or job.name, file=sys.stderr, mininterval=2) as bar:
        shards = 0
        for summary in ds.iter_rows():
            if summary["written"]:
                _trim_heap()
            shards += int(summary["written"])
            retries += int(summary["retries"])
            bar.update(int(summary["rows"]))
            bar.set_postfix(shards=shards)
    return retries
