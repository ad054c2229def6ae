"""An engine output folder: its file names, `_run.json` and the run id, the `_progress/` bookkeeping
(done marks, unit reports), and keeping it a living dataset (`sync_output`, `retire_units`).

Which folder and file is what: see the package docstring (`tokenization/engine/__init__.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

from tokenization import storage
from tokenization.errors import UserError
from tokenization.schema import MANIFEST, QUARANTINE, SHARDS, sha1_hex, stable_json
from tokenization.units import Unit

PROGRESS = "_progress"
UNITS = f"{PROGRESS}/units"
IDS = f"{PROGRESS}/ids"
DUPLICATES = f"{IDS}/duplicates.json"
KEY_RE = r"[0-9a-f]{16}"


def shard_name(unit: str, shard: int) -> str:
    """`shard-KEY-KKK`: shard K of the unit keyed KEY (`Unit.key`)."""
    return f"shard-{unit}-{shard:03d}"


def shard_unit(path: str) -> str | None:
    """The key of the input unit a shard file was written from (`.../shard-KEY-KKK.parquet` -> KEY), else None."""
    m = re.search(rf"shard-({KEY_RE})-\d{{3,}}\.parquet$", path)
    return m.group(1) if m else None


def file_unit(path: str) -> str | None:
    """The unit key any engine file of an output folder belongs to (shard, quarantine, done mark, report, ids)."""
    m = re.search(rf"(?:shard-({KEY_RE})-\d{{3,}}\.(?:parquet|json)|/({KEY_RE})\.(?:json|[0-9a-f]+\.parquet))$", path)
    return (m.group(1) or m.group(2)) if m else None


# --- run id, `_run.json`, `_progress/` ------------------------------------------------------------


def compute_run_id(config: dict) -> str:
    """Hash of the job config alone (codec, reader options, split, rows per shard, rules): the dataset's
    identity. The input listing is not in it: a grown or shrunk input is the same dataset, updated. Nor is a
    setting that cannot change a value written (batch size, block rows, actors, CPUs, threads: every step
    computes a row on its own, whatever rows it was batched with)."""
    return sha1_hex(stable_json({"config": config}).encode())[:16]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def prepare_output(output: str, run_id: str, config: dict, overwrite: bool = False, tables: Iterable[str] = (SHARDS,)) -> None:
    """Record the run; refuse to mix two configs in one folder (`--overwrite` clears it). Same config: the
    folder is updated in place (`sync_output`)."""
    run_file = storage.join(output, "_run.json")
    if storage.exists(run_file) and not overwrite:
        previous = json.loads(storage.read_text(run_file))
        if previous.get("run_id") != run_id:
            old, new = _flat(previous.get("config") or {}), _flat(config)
            diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            raise UserError(
                f"--output {output} holds run {previous.get('run_id')} of another config "
                f"({diff or 'the same keys, written by an older version of this job'}); "
                f"this run is {run_id}. Use another --output, or --overwrite to replace it."
            )
        return
    if overwrite:
        for sub in (*tables, QUARANTINE, PROGRESS, UNITS, IDS):
            for f in storage.list_files(storage.join(output, sub)):
                fs, path = storage.filesystem(f)
                fs.delete_file(path)
    storage.write_bytes_atomic(run_file, json.dumps({"run_id": run_id, "config": config}, indent=2, sort_keys=True).encode())


@dataclass
class UnitReport:
    """What a reader task found in a unit: every record counts as one row in."""

    unit: str  # key
    uri: str
    rows: int
    shards: int
    fingerprint: str = ""


def _rel(sub: str) -> str:
    """`_progress/units` -> `units/`: a folder's prefix among `Progress.files`."""
    return sub[len(PROGRESS) + 1:] + "/" if sub != PROGRESS else ""


@dataclass
class Progress:
    """What `_progress/` holds, read with one listing per run and passed along: on S3 every listing is paged
    LISTs and every unit report a GET, so the driver never re-reads it. The driver keeps it current:
    retiring forgets the files it deleted; after a run, `reload` reads back only the units that ran.

    `files` are names under `_progress/` (`shard-K-000.json`, `units/K.json`, `ids/K.FP.parquet`)."""

    output: str
    files: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)  # done shards' names
    reports: dict[str, UnitReport] = field(default_factory=dict)  # unit key -> report

    @classmethod
    def read(cls, output: str) -> Progress:
        listed = storage.list_files(storage.join(output, PROGRESS), recursive=True)  # one paged listing
        progress = cls(output)
        for f in listed:
            progress._add(f.rsplit(f"/{PROGRESS}/", 1)[1], read=True)
        return progress

    def _add(self, name: str, read: bool) -> None:
        self.files.add(name)
        if "/" not in name and name.endswith(".json"):
            self.done.add(name[: -len(".json")])
        elif read and name.startswith(_rel(UNITS)) and name.endswith(".json"):
            r = UnitReport(**json.loads(storage.read_text(storage.join(self.output, PROGRESS, name))))
            self.reports[r.unit] = r

    def in_folder(self, sub: str) -> list[str]:
        """URIs of the files directly in `sub` (`PROGRESS`, `UNITS` or `IDS`), sorted."""
        prefix = _rel(sub)
        names = sorted(n for n in self.files if n.startswith(prefix) and "/" not in n[len(prefix):])
        return [storage.join(self.output, PROGRESS, n) for n in names]

    def pending(self, units: list[Unit]) -> list[Unit]:
        """Units not read to the end yet, or with a shard that has no done mark."""
        out = []
        for u in units:
            r = self.reports.get(u.key)
            if r is None or any(shard_name(u.key, k) not in self.done for k in range(r.shards)):
                out.append(u)
        return out

    def forget(self, keys: set[str]) -> None:
        """Every file of these units was deleted."""
        self.files = {n for n in self.files if file_unit(f"/{n}") not in keys}
        self.done = {n for n in self.done if file_unit(f"/{n}.json") not in keys}
        self.reports = {k: r for k, r in self.reports.items() if k not in keys}

    def reload(self, units: list[Unit]) -> None:
        """Read back what a run wrote for `units` (their reports and done marks), without listing `_progress/`."""
        for u in units:
            report = f"{_rel(UNITS)}{u.key}.json"
            path = storage.join(self.output, PROGRESS, report)
            if not storage.exists(path):
                continue
            r = self.reports[u.key] = UnitReport(**json.loads(storage.read_text(path)))
            self._add(report, read=False)
            for k in range(r.shards):
                mark = f"{shard_name(u.key, k)}.json"
                if mark not in self.files and storage.exists(storage.join(self.output, PROGRESS, mark)):
                    self._add(mark, read=False)


def done_shards(output: str) -> set[str]:
    """The done shards' names (tests and tools; a run passes its `Progress` along instead)."""
    return Progress.read(output).done


def pending_units(output: str, units: list[Unit]) -> list[Unit]:
    """Units not read to the end yet, or with a shard that has no done mark (tests and tools, as `done_shards`)."""
    return Progress.read(output).pending(units)


# --- a living output folder: which units are new, changed, gone -----------------------------------


@dataclass
class SyncPlan:
    """How this run's listing differs from what the folder holds (unit keys)."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"units_new": len(self.new), "units_changed": len(self.changed), "units_removed": len(self.removed),
                "units_unchanged": len(self.unchanged)}

    def line(self) -> str:
        return (f"units: {len(self.new)} new, {len(self.changed)} changed, {len(self.removed)} removed, "
                f"{len(self.unchanged)} unchanged")


def _engine_files(output: str, tables: Iterable[str], progress: Progress | None) -> list[str]:
    """Every per-unit file of the folder, in the order a retirement deletes them: the unit's report first (the
    unit turns pending at once), then its done marks, then data and quarantine, then its id cache. The
    `_progress/` folders come from `progress` where given (the run's one listing)."""
    folders = (UNITS, PROGRESS, *tables, QUARANTINE, IDS)
    return [f for sub in folders
            for f in (progress.in_folder(sub) if progress and sub in (UNITS, PROGRESS, IDS) else storage.list_files(storage.join(output, sub)))]


def retire_units(output: str, keys: set[str], listed: set[str] | None, tables: Iterable[str],
                 progress: Progress | None = None) -> int:
    """Delete every file of the units `keys` (and, with `listed`, of any unit not in it); `progress` forgets
    them. Returns files deleted.

    Idempotent: a run killed halfway through deletes the rest next time, since leftovers still name a unit
    that is retired or not listed."""
    gone, n = set(), 0
    for f in _engine_files(output, tables, progress):
        k = file_unit(f)
        if k is not None and (k in keys or (listed is not None and k not in listed)):
            storage.remove_if_exists(f)
            gone.add(k)
            n += 1
    if progress:
        progress.forget(gone)
    return n


def sync_output(output: str, units: list[Unit], tables: Iterable[str] = (SHARDS,), progress: Progress | None = None) -> SyncPlan:
    """Bring the folder to this listing before any work: classify units, retire changed and removed ones.

    A changed unit's old files go before its new ones are written, so a reader never sees both; the stale
    `_manifest.json` goes too whenever anything will change (the new one is written last). `progress` (read
    here when not given) follows."""
    progress = progress or Progress.read(output)
    reports, plan = progress.reports, SyncPlan()
    listed = {u.key for u in units}
    for u in units:
        r = reports.get(u.key)
        if r is None:
            plan.new.append(u.key)
        elif r.fingerprint != u.fingerprint:
            plan.changed.append(u.key)
        else:
            plan.unchanged.append(u.key)
    plan.removed = sorted(k for k in reports if k not in listed)
    if plan.changed or plan.removed or plan.new:
        storage.remove_if_exists(storage.join(output, MANIFEST))
    retire_units(output, set(plan.changed), listed, tables, progress)
    return plan


def write_unit_report(output: str, report: UnitReport) -> None:
    """The unit was read to the end: its rows count in, and its shards and fingerprint are known."""
    storage.write_bytes_atomic(storage.join(output, UNITS, f"{report.unit}.json"), json.dumps(asdict(report)).encode())
