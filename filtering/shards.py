"""Filter output for the sharded-job engine: kept rows to `kept/`, rejected rows to `rejects/`.

Everything else (quarantine table, progress marks, `_run.json`, `_manifest.json` with
in = kept + rejected + quarantined) is the engine's (`tokenization/sharded_job.py`):

    kept/shard-00000-000.parquet        rows with keep = true (dialogue or scored-TTS schema); absent when none
    rejects/shard-00000-000.parquet     rows with keep = false, same columns, `reject_reason` set; absent when none
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from filtering.dialogue_schema import DIALOGUE, DialogueRow, dialogue_rows_to_table, tts_filter_schema
from filtering.rules import reason_code
from tokenization.schema import KEPT, N_CODEBOOKS, REJECTS


def _keep(row) -> bool:
    return bool(row.keep if isinstance(row, DialogueRow) else row["keep"])


@dataclass
class FilterSink:
    """Scored rows -> `kept/` or `rejects/`; `kind` is "dialogue" (DialogueRow) or "tts" (token-row dicts)."""

    kind: str = DIALOGUE
    n_codebooks: int = N_CODEBOOKS
    tables: tuple[str, ...] = (KEPT, REJECTS)

    def route(self, row) -> str:
        return KEPT if _keep(row) else REJECTS

    def seconds(self, row) -> float:
        if isinstance(row, DialogueRow):
            return float(sum(t.duration_s for t in row.turns))
        return float(row.get("duration_s") or 0.0)

    def reject_code(self, row) -> str | None:
        if _keep(row):
            return None
        return reason_code(row.reject_reason if isinstance(row, DialogueRow) else row["reject_reason"])

    def table(self, rows: list, sub: str) -> pa.Table:
        if self.kind == DIALOGUE:
            return dialogue_rows_to_table(rows, self.n_codebooks)
        return pa.Table.from_pylist(rows, schema=tts_filter_schema(self.n_codebooks))
