"""Filter output: kept / rejects / quarantine shards, progress marks and `_manifest.json`.

Built on the tokenization job's pieces (`tokenization/shards.py`: plan, run_id, atomic
writes, quarantine table, progress marks, `_run.json`), with a third table per shard:

    kept/shard-00000.parquet        rows with keep = true  (dialogue or scored-TTS schema); absent when none
    rejects/shard-00000.parquet     rows with keep = false, same columns, `reject_reason` set; absent when none
    quarantine/shard-00000.parquet  rows whose input could not be read (tokenization's schema)
    quarantine/manifest.parquet     manifest records that never became rows
    _progress/shard-00000.json      written last: the shard is done
    _manifest.json                  shards, checksums, counts: in = kept + rejected + quarantined
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from filtering.dialogue_schema import DialogueRow, dialogue_rows_to_table, tts_filter_schema
from filtering.rules import reason_code
from filtering.steps import unpack
from tokenization import storage
from tokenization.schema import QUARANTINE_SCHEMA, sha1_hex, table_to_parquet_bytes
from tokenization.shards import PROGRESS, QUARANTINE, write_quarantine

KEPT, REJECTS = "kept", "rejects"


@dataclass
class FilterShardResult:
    name: str
    kept: int
    rejected: int
    quarantined: int
    seconds_kept: float
    seconds_rejected: float
    files: dict[str, dict] = field(default_factory=dict)  # subdir -> {"bytes", "sha1", "rows"}
    reject_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def _seconds(row) -> float:
    if isinstance(row, DialogueRow):
        return float(sum(t.duration_s for t in row.turns))
    return float(row.get("duration_s") or 0.0)


def _table(rows: list, kind: str, n_codebooks: int) -> pa.Table:
    if kind == "dialogue":
        return dialogue_rows_to_table(rows, n_codebooks)
    return pa.Table.from_pylist(rows, schema=tts_filter_schema(n_codebooks))


def write_filter_shard(output: str, name: str, records: list[dict], kind: str, metadata: dict[bytes, bytes],
                       n_codebooks: int = 8) -> FilterShardResult:
    """Write one shard's three tables (ordered by input position), then its progress mark, each atomically."""
    records = sorted(records, key=lambda r: r["pos"])
    ok = [r for r in records if r["status"] == "ok"]
    keep = [r["row"] for r in ok if (r["row"].keep if isinstance(r["row"], DialogueRow) else r["row"]["keep"])]
    reject = [r["row"] for r in ok if not (r["row"].keep if isinstance(r["row"], DialogueRow) else r["row"]["keep"])]
    bad = [r for r in records if r["status"] != "ok"]
    run_id = metadata.get(b"run_id", b"").decode()
    quarantine = pa.Table.from_pylist(
        [{"utt_id": (r["row"].get("dialogue_id") or r["row"].get("utt_id") or ""), "line": "", "file": r["file"],
          "stage": r["stage"], "reason": r["reason"], "run_id": run_id} for r in bad], schema=QUARANTINE_SCHEMA)
    write_quarantine(output, name, quarantine)
    files = {}
    for sub, rows in ((REJECTS, reject), (KEPT, keep)):
        if not rows:  # no empty files, as in tokenization: some readers (datasets) reject zero-row Parquet
            continue
        data = table_to_parquet_bytes(_table(rows, kind, n_codebooks), metadata)
        storage.write_bytes_atomic(storage.join(output, sub, f"{name}.parquet"), data)
        files[sub] = {"bytes": len(data), "sha1": sha1_hex(data), "rows": len(rows)}
    reasons: dict[str, int] = {}
    for row in reject:
        code = reason_code(row.reject_reason if isinstance(row, DialogueRow) else row["reject_reason"])
        reasons[code] = reasons.get(code, 0) + 1
    q_reasons: dict[str, int] = {}
    for r in bad:
        q_reasons[r["stage"]] = q_reasons.get(r["stage"], 0) + 1
    result = FilterShardResult(name, len(keep), len(reject), len(bad), sum(map(_seconds, keep)),
                               sum(map(_seconds, reject)), files, reasons, q_reasons)
    storage.write_bytes_atomic(storage.join(output, PROGRESS, f"{name}.json"), json.dumps(asdict(result)).encode())
    return result


class FilterShardWriter:
    """Single writer step: buffers records per shard; writes a shard once all its rows arrived.

    Rows are ordered by input position, so shard bytes do not depend on scheduling.
    """

    def __init__(self, output: str, expected_rows: dict[int, int], kind: str, metadata: dict[bytes, bytes],
                 n_codebooks: int = 8):
        self.output, self.expected, self.kind = output, expected_rows, kind
        self.metadata, self.n_codebooks = metadata, n_codebooks
        self.buffers: dict[int, list[dict]] = {}

    def __call__(self, batch: dict) -> dict:
        written, n = [], 0
        for payload in batch["payload"]:
            for rec in unpack(payload):
                n += 1
                buf = self.buffers.setdefault(rec["shard"], [])
                buf.append(rec)
                if len(buf) == self.expected[rec["shard"]]:
                    name = f"shard-{rec['shard']:05d}"
                    write_filter_shard(self.output, name, self.buffers.pop(rec["shard"]), self.kind, self.metadata, self.n_codebooks)
                    written.append(name)
        return {"rows": [n], "shards_written": [json.dumps(written)]}


def load_filter_results(output: str) -> list[FilterShardResult]:
    return [FilterShardResult(**json.loads(storage.read_text(f))) for f in storage.list_files(storage.join(output, PROGRESS), ".json")]


def write_filter_manifest(output: str, run_id: str, n_in: int, manifest_quarantined: int, extra: dict | None = None) -> dict:
    """`_manifest.json` for a filter run; `counts.error` is set when in != kept + rejected + quarantined."""
    results = load_filter_results(output)
    kept, rejected = sum(r.kept for r in results), sum(r.rejected for r in results)
    quarantined = manifest_quarantined + sum(r.quarantined for r in results)
    reject_reasons: dict[str, int] = {}
    q_reasons: dict[str, int] = {"manifest": manifest_quarantined} if manifest_quarantined else {}
    for r in results:
        for k, v in r.reject_reasons.items():
            reject_reasons[k] = reject_reasons.get(k, 0) + v
        for k, v in r.quarantine_reasons.items():
            q_reasons[k] = q_reasons.get(k, 0) + v
    manifest = {
        "run_id": run_id,
        "job": "filter",
        "shards": [
            {"path": f"{sub}/{r.name}.parquet", **info} for r in results for sub, info in sorted(r.files.items())
        ] + [{"path": f"{QUARANTINE}/{r.name}.parquet", "rows": r.quarantined} for r in results],
        "counts": {
            "in": n_in, "kept": kept, "rejected": rejected, "quarantined": quarantined,
            "hours_kept": round(sum(r.seconds_kept for r in results) / 3600, 6),
            "hours_rejected": round(sum(r.seconds_rejected for r in results) / 3600, 6),
        },
        "reject_reasons": dict(sorted(reject_reasons.items())),
        "quarantine_reasons": q_reasons,
        **(extra or {}),
    }
    if kept + rejected + quarantined != n_in:
        manifest["counts"]["error"] = f"rows in ({n_in}) != kept ({kept}) + rejected ({rejected}) + quarantined ({quarantined})"
    storage.write_bytes_atomic(storage.join(output, "_manifest.json"), json.dumps(manifest, indent=2).encode())
    return manifest
