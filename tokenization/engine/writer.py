"""Writing results: a shard's tables, quarantine rows and done mark, each atomically (`ShardWriter`, the
writer step), and `_manifest.json`, whose counts come from the done marks and unit reports and must add up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from tokenization import storage
from tokenization.engine.jobs import Batch, Item
from tokenization.engine.output_folder import PROGRESS, Progress, shard_name
from tokenization.schema import LINE_CAP, MANIFEST, QUARANTINE, QUARANTINE_SCHEMA, REJECTS, sha1_hex, table_to_parquet_bytes
from tokenization.units import Unit


@dataclass
class ShardResult:
    """What `_progress/<shard>.json` records once a shard is written."""

    name: str
    rows_in: int
    rows: dict[str, int]  # data folder -> rows
    quarantined: int
    seconds: dict[str, float]
    files: dict[str, dict] = field(default_factory=dict)  # data folder -> {"bytes", "sha1", "rows"}
    reject_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def reason_key(reason: str) -> str:
    """`/a/b.wav: file not found` -> `file not found` (counts by kind, not by file)."""
    return reason.split(": ", 1)[-1].split(" (")[0]


def quarantine_table(items: list[Item], run_id: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"utt_id": i.id, "line": i.line[:LINE_CAP], "file": i.file, "stage": i.stage, "reason": i.reason, "run_id": run_id} for i in items],
        schema=QUARANTINE_SCHEMA)


def write_quarantine(output: str, name: str, table: pa.Table) -> None:
    storage.write_bytes_atomic(storage.join(output, QUARANTINE, f"{name}.parquet"), table_to_parquet_bytes(table))


def write_shard(output: str, name: str, items: list[Item], sink, metadata: dict[bytes, bytes]) -> ShardResult:
    """Write quarantine, then the data tables (rows in input order), then the done mark, each atomically."""
    items = sorted(items, key=lambda i: i.pos)
    ok = [i.row for i in items if i.status == "ok"]
    bad = [i for i in items if i.status != "ok"]
    write_quarantine(output, name, quarantine_table(bad, metadata.get(b"run_id", b"").decode()))
    by_sub = {sub: [r for r in ok if sink.route(r) == sub] for sub in sink.tables}
    files, rows, seconds = {}, {}, {}
    for sub, sub_rows in by_sub.items():
        rows[sub], seconds[sub] = len(sub_rows), float(sum(sink.seconds(r) for r in sub_rows))
        if not sub_rows:  # no empty files: some readers (datasets) reject zero-row Parquet
            # A re-run of a shard a killed run had written (rows can route differently when ASR
            # batches differ) must not leave the old attempt's file beside the new ones.
            storage.remove_if_exists(storage.join(output, sub, f"{name}.parquet"))
            continue
        data = table_to_parquet_bytes(sink.table(sub_rows, sub), metadata)
        storage.write_bytes_atomic(storage.join(output, sub, f"{name}.parquet"), data)
        files[sub] = {"bytes": len(data), "sha1": sha1_hex(data), "rows": len(sub_rows)}
    rejects, q_reasons = {}, {}
    for r in ok:
        code = sink.reject_code(r)
        if code:
            rejects[code] = rejects.get(code, 0) + 1
    for i in bad:
        q_reasons[reason_key(i.reason)] = q_reasons.get(reason_key(i.reason), 0) + 1
    result = ShardResult(name, len(items), rows, len(bad), seconds, files, rejects, q_reasons)
    storage.write_bytes_atomic(storage.join(output, PROGRESS, f"{name}.json"), json.dumps(asdict(result)).encode())
    return result


class ShardWriter:
    """Buffers batches per shard and writes a shard once all its rows arrived (the shard's last
    batch says how many). Rows are ordered by input position, so bytes never depend on scheduling.
    """

    def __init__(self, output: str, sink, metadata: dict[bytes, bytes]):
        self.output, self.sink, self.metadata = output, sink, metadata
        self.buffers: dict[tuple[str, int], dict[int, Item]] = {}  # by position: a batch delivered twice counts once
        self.expected: dict[tuple[str, int], int] = {}

    def add(self, batch: Batch) -> list[str]:
        """Take one batch; returns the names of the shards it completed."""
        key = (batch.unit, batch.shard)
        self.buffers.setdefault(key, {}).update((i.pos, i) for i in batch.items)
        if batch.shard_rows:
            self.expected[key] = batch.shard_rows
        if key in self.expected and len(self.buffers[key]) == self.expected[key]:
            name = shard_name(*key)
            write_shard(self.output, name, list(self.buffers.pop(key).values()), self.sink, self.metadata)
            del self.expected[key]
            return [name]
        return []


# --- the manifest ---------------------------------------------------------------------------------


def load_results(output: str, progress: Progress) -> list[ShardResult]:
    """Every done mark's record, in file-name order."""
    names = sorted(f"{n}.json" for n in progress.done)
    return [ShardResult(**json.loads(storage.read_text(storage.join(output, PROGRESS, n)))) for n in names]


def _add(into: dict, more: dict) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def write_manifest(output: str, run_id: str, units: list[Unit], tables: tuple[str, ...], extra: dict | None = None,
                   progress: Progress | None = None) -> dict:
    """`_manifest.json`: every shard file with rows and checksum, and counts that must add up.

    Rows in are what the reader tasks counted per unit (`_progress/units`); kept, rejected and
    quarantined are what the writer reported per shard. `counts.error` says why they differ. `progress`
    is the run's (current after the run); read here when not given.
    """
    progress = progress or Progress.read(output)
    results, reports = load_results(output, progress), progress.reports
    kept_sub = tables[0]
    n_in = sum(reports[u.key].rows for u in units if u.key in reports)
    kept = sum(r.rows.get(kept_sub, 0) for r in results)
    rejected = sum(r.rows.get(REJECTS, 0) for r in results)
    quarantined = sum(r.quarantined for r in results)
    q_reasons, rejects = {}, {}
    for r in results:
        _add(q_reasons, r.quarantine_reasons)
        _add(rejects, r.reject_reasons)
    hours = {sub: round(sum(r.seconds.get(sub, 0.0) for r in results) / 3600, 6) for sub in tables}
    counts: dict = {"in": n_in, "kept": kept}
    if REJECTS in tables:
        counts.update(rejected=rejected, quarantined=quarantined, hours_kept=hours[kept_sub], hours_rejected=hours[REJECTS])
    else:
        counts.update(quarantined=quarantined, hours=hours[kept_sub])
    manifest = {
        "run_id": run_id,
        "shards": [{"path": f"{sub}/{r.name}.parquet", **info, "quarantined": r.quarantined,
                    "audio_seconds": round(r.seconds.get(sub, 0.0), 3)}
                   for sub in tables for r in results for s, info in r.files.items() if s == sub],
        "quarantine": [{"path": f"{QUARANTINE}/{r.name}.parquet", "rows": r.quarantined} for r in results],
        "counts": counts,
        "quarantine_reasons": dict(sorted(q_reasons.items())),
        **({"reject_reasons": dict(sorted(rejects.items()))} if REJECTS in tables else {}),
        **(extra or {}),
    }
    missing = [u.where for u in progress.pending(units)]
    if missing:
        counts["error"] = f"{len(missing)} input units not finished (first: {missing[0]})"
    elif kept + rejected + quarantined != n_in:
        counts["error"] = (f"rows in ({n_in}) != kept ({kept})" + (f" + rejected ({rejected})" if REJECTS in tables else "")
                           + f" + quarantined ({quarantined})")
    storage.write_bytes_atomic(storage.join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
    return manifest
