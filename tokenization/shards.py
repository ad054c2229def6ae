"""Deterministic shard planning, atomic shard writing, and the run's `_manifest.json`.

A job is planned on the driver before any audio is read: input rows (in input order) are cut
into shards of `rows_per_shard`, each shard into encode batches of `batch_size`. Names and
contents then depend only on the input listing and the config (`run_id`), so a rerun skips
shards that are done and rewrites the others byte for byte.

Output folder:
    shards/shard-00000.parquet     kept rows (not written when none), file metadata = codec facts
    quarantine/shard-00000.parquet rows of that shard that could not be encoded, with reasons
    quarantine/manifest.parquet    input lines that never became rows
    _progress/shard-00000.json     written last: the shard is done (rows, seconds, sha1)
    _run.json                      run_id and config, checked on rerun
    _manifest.json                 shards, rows, checksums, counts
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from tokenization import storage
from tokenization.manifest import ManifestEntry
from tokenization.schema import QUARANTINE_SCHEMA, QuarantineRow, sha1_hex, stable_json, table_to_parquet_bytes

SHARDS, QUARANTINE, PROGRESS = "shards", "quarantine", "_progress"


@dataclass
class ShardPlan:
    index: int
    batches: list[list[ManifestEntry]]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def n_rows(self) -> int:
        return sum(len(b) for b in self.batches)


def plan_shards(entries: list[ManifestEntry], rows_per_shard: int, batch_size: int) -> list[ShardPlan]:
    """Cut entries (in input order) into shards and encode batches."""
    if rows_per_shard < 1 or batch_size < 1:
        raise ValueError("rows_per_shard and batch_size must be >= 1")
    plans = []
    for index, start in enumerate(range(0, len(entries), rows_per_shard)):
        rows = entries[start : start + rows_per_shard]
        plans.append(ShardPlan(index, [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]))
    return plans


def compute_run_id(config: dict, entries: list[ManifestEntry]) -> str:
    """Hash of the job config and its input listing: same job -> same id."""
    listing = sha1_hex("\n".join(stable_json(e.to_dict()) for e in entries).encode())
    return sha1_hex(stable_json({"config": config, "listing": listing}).encode())[:16]


@dataclass
class ShardResult:
    """What `_progress/<shard>.json` records once a shard is written."""

    name: str
    rows: int
    quarantined: int
    audio_seconds: float
    bytes: int
    sha1: str
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def is_done(output: str, name: str) -> bool:
    return storage.exists(storage.join(output, PROGRESS, f"{name}.json"))


def write_quarantine(output: str, name: str, rows: list[QuarantineRow] | pa.Table) -> None:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist([r.to_dict() for r in rows], schema=QUARANTINE_SCHEMA)
    storage.write_bytes_atomic(storage.join(output, QUARANTINE, f"{name}.parquet"), table_to_parquet_bytes(table))


def write_shard(output: str, name: str, table: pa.Table, quarantine: pa.Table, metadata: dict[bytes, bytes]) -> ShardResult:
    """Write quarantine, then shard, then the progress record (the 'done' mark), each atomically."""
    write_quarantine(output, name, quarantine)
    data = b""
    if table.num_rows:  # no empty files: some readers (datasets) reject zero-row Parquet
        data = table_to_parquet_bytes(table, metadata)
        storage.write_bytes_atomic(storage.join(output, SHARDS, f"{name}.parquet"), data)
    reasons: dict[str, int] = {}
    for reason in quarantine.column("reason").to_pylist():
        key = reason.split(": ", 1)[-1].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    duration = table.column("duration_s").to_numpy() if "duration_s" in table.column_names else []
    result = ShardResult(name, table.num_rows, quarantine.num_rows, float(sum(duration)), len(data), sha1_hex(data) if data else "", reasons)
    storage.write_bytes_atomic(storage.join(output, PROGRESS, f"{name}.json"), json.dumps(asdict(result)).encode())
    return result


def prepare_output(output: str, run_id: str, config: dict, overwrite: bool = False) -> None:
    """Record the run; refuse to mix two different runs in one folder."""
    run_file = storage.join(output, "_run.json")
    if storage.exists(run_file) and not overwrite:
        previous = json.loads(storage.read_text(run_file))
        if previous.get("run_id") != run_id:
            raise SystemExit(
                f"{output} holds run {previous.get('run_id')} (other input or config); this run is {run_id}. "
                "Use another --output, or --overwrite to replace it."
            )
        return
    if overwrite:
        for sub in (SHARDS, QUARANTINE, PROGRESS):
            for f in storage.list_files(storage.join(output, sub)):
                fs, path = storage.filesystem(f)
                fs.delete_file(path)
    storage.write_bytes_atomic(run_file, json.dumps({"run_id": run_id, "config": config}, indent=2, sort_keys=True).encode())


def load_results(output: str) -> list[ShardResult]:
    return [ShardResult(**json.loads(storage.read_text(f))) for f in storage.list_files(storage.join(output, PROGRESS), ".json")]


def write_manifest(output: str, run_id: str, n_in: int, manifest_quarantined: int, extra: dict | None = None) -> dict:
    """`_manifest.json`: every shard with rows and checksum, and counts that must add up."""
    results = load_results(output)
    kept = sum(r.rows for r in results)
    quarantined = manifest_quarantined + sum(r.quarantined for r in results)
    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r.quarantine_reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    seconds = sum(r.audio_seconds for r in results)
    manifest = {
        "run_id": run_id,
        "shards": [
            {"path": f"{SHARDS}/{r.name}.parquet", "rows": r.rows, "quarantined": r.quarantined, "bytes": r.bytes, "sha1": r.sha1, "audio_seconds": round(r.audio_seconds, 3)}
            for r in results
            if r.rows
        ],
        "counts": {"in": n_in, "kept": kept, "quarantined": quarantined, "hours": round(seconds / 3600, 6)},
        "quarantine_reasons": {"manifest": manifest_quarantined, **reasons},
        **(extra or {}),
    }
    if kept + quarantined != n_in:
        manifest["counts"]["error"] = f"rows in ({n_in}) != kept ({kept}) + quarantined ({quarantined})"
    storage.write_bytes_atomic(storage.join(output, "_manifest.json"), json.dumps(manifest, indent=2).encode())
    return manifest
