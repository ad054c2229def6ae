"""Reading an output folder once for the whole audit: every table goes to every consumer.

Stats, lint and the per-row facts (threshold curve, run compare, quality metadata) all need
the same kept/rejected tables; `scan` reads each Parquet file once, without the audio bytes
(`turns.audio_flac`: the bulk of a dialogue shard), and hands each table to the visitors.
The few example rows whose audio the report embeds are fetched afterwards by row group
(`fetch_rows`), so audio is read only for them.

    >>> kind = scan("out/filter", [lambda status, path, table, meta: print(status, table.num_rows)])
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filtering.dialogue_schema import DIALOGUE, ID_COLUMN, TOKENIZE, TTS, detect_kind, row_kind
from filtering.rules import Rules, decide, reason_code
from tokenization import storage
from tokenization.errors import UserError
from tokenization.schema import KEPT, MANIFEST, QUARANTINE, REJECTS, SHARDS, decode_metadata

Visitor = Callable[[str, str, pa.Table, dict], None]  # (status, path, table, file metadata)
AUDIO_LEAF = "audio_flac"


def data_files(folder: str, kind: str) -> list[tuple[str, str]]:
    """(status, path) of every data file: `kept`/`rejected` (a tokenize folder keeps everything)."""
    subdirs = [(SHARDS, "kept")] if kind == TOKENIZE else [(KEPT, "kept"), (REJECTS, "rejected")]
    return [(status, p) for sub, status in subdirs for p in storage.list_files(storage.join(folder, sub), ".parquet")]


def read_without_audio(path: str) -> tuple[pa.Table, dict[str, str]]:
    """One data file with every column but the turns' audio bytes; its file metadata."""
    with storage.open_input(path) as f:
        pf = pq.ParquetFile(f)
        leaves = [c.path for c in pf.schema]
        wanted = [p for p in leaves if not p.endswith("." + AUDIO_LEAF)]
        table = pf.read(columns=wanted if len(wanted) < len(leaves) else None)
        return table, decode_metadata(pf.schema_arrow.metadata)


def scan(folder: str, visitors: list[Visitor], kind: str | None = None) -> str:
    """Read every kept/rejected file of `folder` once and hand it to each visitor. Returns the kind."""
    kind = kind or detect_kind(folder)
    for status, path in data_files(folder, kind):
        table, meta = read_without_audio(path)
        for visit in visitors:
            visit(status, path, table, meta)
    return kind


def read_manifest(folder: str) -> dict:
    path = storage.join(folder, MANIFEST)
    return json.loads(storage.read_text(path)) if storage.exists(path) else {}


def read_quarantine(folder: str) -> list[dict]:
    rows = []
    for path in storage.list_files(storage.join(folder, QUARANTINE), ".parquet"):
        with storage.open_input(path) as fh:
            rows += pq.read_table(fh).to_pylist()
    return rows


def run_rules(manifest: dict, meta: dict[str, str]) -> Rules | None:
    """The rules a filter run judged with: `_manifest.json`, else the files' metadata; None for tokenize runs."""
    d = manifest.get("rules") or (json.loads(meta["rules"]) if meta.get("rules") else None)
    return Rules.from_dict(d) if d is not None else None


# ---- per-row facts: what the threshold curve, the compare and the quality metadata need ---------
@dataclass
class RowFact:
    """One output row (utterance or dialogue), light: no text, no audio."""

    id: str
    status: str  # kept | rejected | quarantined
    source: str
    seconds: float
    wer: float | None  # the row's gate: worst scored turn (float32 as stored)
    reason: str
    eligible: bool  # passes every rule except max_wer (so kept iff wer <= max_wer)
    meta: dict | None
    path: str = ""
    index: int = -1  # row index in `path`


@dataclass
class FactCollector:
    """Visitor collecting a `RowFact` per row; `rules` are the run's (eligibility of rejected rows)."""

    rules: Rules | None = None
    facts: list[RowFact] = field(default_factory=list)

    def __call__(self, status: str, path: str, table: pa.Table, meta: dict) -> None:
        if self.rules is None and status != "kept":
            self.rules = run_rules({}, meta)
        cols = table.column_names
        dialogue = row_kind(cols) == DIALOGUE
        ids = table.column(ID_COLUMN[DIALOGUE if dialogue else TTS]).to_pylist()
        n = len(ids)
        get = lambda c, default=None: table.column(c).to_pylist() if c in cols else [default] * n  # noqa: E731
        source, reason, wer, metas = get("source", ""), get("reject_reason", ""), get("wer"), get("meta")
        if dialogue:
            turns = table.column("turns").combine_chunks()
            dur = np.asarray(turns.flatten().field("duration_s").fill_null(0).to_numpy(zero_copy_only=False), np.float64)
            offs = np.asarray(turns.offsets.to_numpy(zero_copy_only=False))
            seconds = np.add.reduceat(dur, offs[:-1]) if len(dur) else np.zeros(n)
            seconds = np.where(offs[1:] > offs[:-1], seconds, 0.0)
        else:
            seconds = np.asarray([d or 0.0 for d in get("duration_s", 0.0)], np.float64)
        judged = self._rejudge(table, reason, status)
        for i, rid in enumerate(ids):
            self.facts.append(RowFact(rid, status, source[i] or "", float(seconds[i]), wer[i], reason[i] or "",
                                      status == "kept" or judged.get(i, False), _parse_meta(metas[i], path, rid), path, i))

    def _rejudge(self, table: pa.Table, reason: list, status: str) -> dict[int, bool]:
        """Rejected rows that pass every rule but the WER one (judged again with max_wer off)."""
        if status != "rejected" or self.rules is None:
            return {}
        rules = dataclasses.replace(self.rules, max_wer=None)
        idx = [i for i, r in enumerate(reason) if reason_code(r or "") == "wer"]
        if not idx:
            return {}
        if row_kind(table.column_names) == DIALOGUE:
            fields = ("role", "wer", "cer", "duration_s", "n_ref_words", "n_del", "n_ins")
            sub = table.select(["turns"]).take(idx).column("turns").combine_chunks()
            flat, offs = sub.flatten(), sub.offsets.to_pylist()
            f = {k: flat.field(k).to_pylist() for k in fields}
            rows = [{"turns": [{k: f[k][j] for k in fields} for j in range(offs[r], offs[r + 1])]} for r in range(len(idx))]
        else:
            fields = ("wer", "cer", "duration_s", "n_ref_words", "n_del", "n_ins")
            rows = table.select(list(fields)).take(idx).to_pylist()
        return {i: _scored(row) and decide(row, rules)[0] for i, row in zip(idx, rows)}


def _scored(row: dict) -> bool:
    return any(t.get("wer") is not None for t in row["turns"]) if "turns" in row else row.get("wer") is not None


def _parse_meta(value, path: str, rid: str) -> dict | None:
    if not value:
        return None
    try:
        d = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: row {rid}: `meta` is not JSON ({exc}): {value[:80]!r}") from None
    return d if isinstance(d, dict) else None


def quarantine_facts(quarantine: list[dict]) -> list[RowFact]:
    return [RowFact(q["utt_id"], "quarantined", "", 0.0, None, f"{q['stage']}: {q['reason']}", False, None) for q in quarantine]


# ---- the example rows, with their audio, fetched by row group --------------------------------
def fetch_rows(wanted: dict[str, list[int]]) -> dict[tuple[str, int], dict]:
    """Full rows (audio included) at {path: [row index]}, reading only the row groups that hold them.

    Returns:
        {(path, index): row as a Python dict}.
    """
    out: dict[tuple[str, int], dict] = {}
    for path, indices in wanted.items():
        with storage.open_input(path) as f:
            pf = pq.ParquetFile(f)
            starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
            by_group: dict[int, list[int]] = defaultdict(list)
            for i in sorted(set(indices)):
                by_group[int(np.searchsorted(starts, i, side="right") - 1)].append(i)
            for g, rows in by_group.items():
                table = pf.read_row_group(g).take([i - int(starts[g]) for i in rows])
                for i, row in zip(rows, table.to_pylist()):
                    out[(path, i)] = row
    return out
