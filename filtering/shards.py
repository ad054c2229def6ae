"""Filter output for the sharded-job engine: kept rows to `kept/`, rejected rows to `rejects/`.

Everything else (quarantine table, progress marks, `_run.json`, `_manifest.json` with
in = kept + rejected + quarantined) is the engine's (`tokenization/engine/`):

    kept/shard-KEY-000.parquet          rows with keep = true (dialogue or scored-TTS schema); absent when none
    rejects/shard-KEY-000.parquet       rows with keep = false, same columns, `reject_reason` set; absent when none
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from filtering.dialogue_schema import DIALOGUE, DialogueRow, ScoredTTSRow, dialogue_rows_to_table
from filtering.rules import reason_code
from tokenization.schema import KEPT, N_CODEBOOKS, REJECTS, rows_to_table


@dataclass
class FilterSink:
    """Scored rows -> `kept/` or `rejects/`; `kind` is "dialogue" (`DialogueRow`) or "tts" (`ScoredTTSRow`)."""

    kind: str = DIALOGUE
    n_codebooks: int = N_CODEBOOKS
    tables: tuple[str, ...] = (KEPT, REJECTS)

    def route(self, row: DialogueRow | ScoredTTSRow) -> str:
        return KEPT if row.keep else REJECTS

    def seconds(self, row: DialogueRow | ScoredTTSRow) -> float:
        if isinstance(row, DialogueRow):
            return float(sum(t.duration_s for t in row.turns))
        return float(row.duration_s or 0.0)

    def reject_code(self, row: DialogueRow | ScoredTTSRow) -> str | None:
        return None if row.keep else reason_code(row.reject_reason)

    def table(self, rows: list, sub: str) -> pa.Table:
        if self.kind == DIALOGUE:
            return dialogue_rows_to_table(rows, self.n_codebooks)
        return rows_to_table(rows, self.n_codebooks, ScoredTTSRow)
