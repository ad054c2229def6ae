"""Reading an output folder's data files for the audit, without the audio bytes.

`data_files` lists the kept/rejected Parquet files; `read_without_audio` reads one without
`turns.audio_flac` (the bulk of a dialogue shard); the audit's scan (`partial.scan_file`) hands that
one table to every collector: stats, lint rows (`lint.LintCollector`) and the per-row facts
(`FactCollector`: threshold curve, quality curves, quality metadata, the rows to play). `scan` runs
visitors over a whole folder in this process (`--compare` reads both runs' facts with it). The few
example rows whose audio the report embeds are fetched afterwards by row group (`fetch_rows`).

    >>> kind = scan("out/filter", [lambda status, path, table, meta: print(status, table.num_rows)])
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filtering.quality import QUALITY_COLUMNS, worst
from filtering.rules import QUALITY_RULES, Rules, decide, reason_code
from tokenization import storage
from tokenization.dialogue_schema import DIALOGUE, ID_COLUMN, TOKENIZE, TTS, detect_kind, row_kind
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


def quarantine_summary(folder: str, n_examples: int = 10) -> dict:
    """{"n", "by_stage": {stage: rows}, "examples": the first rows} of the quarantine table, read file by file."""
    n, by_stage, examples = 0, defaultdict(int), []
    for path in storage.list_files(storage.join(folder, QUARANTINE), ".parquet"):
        with storage.open_input(path) as fh:
            t = pq.read_table(fh, columns=["utt_id", "file", "stage", "reason"])
        n += t.num_rows
        for stage in t.column("stage").to_pylist():
            by_stage[stage] += 1
        examples += t.slice(0, max(0, n_examples - len(examples))).to_pylist()
    return {"n": n, "by_stage": dict(sorted(by_stage.items())), "examples": examples}


def find_rules(manifest: dict, files: list[tuple[str, str]]) -> Rules | None:
    """The run's rules: `_manifest.json`, else the first rejects file's metadata (its footer only)."""
    if manifest.get("rules") is not None:
        return run_rules(manifest, {})
    for status, path in files:
        if status != "kept":
            with storage.open_input(path) as f:
                return run_rules({}, decode_metadata(pq.ParquetFile(f).schema_arrow.metadata))
    return None


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
    quality: dict | None = None  # quality column -> the row's gate value (worst scored clip); None: not scored
    clips: list | None = None  # per scored clip: {quality column: value, "wer": value} (histograms, WER vs DNSMOS)
    q_eligible: dict | None = None  # quality rule -> passes every other rule (kept iff its value passes that rule)


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
        judged = self._rejudge(table, reason, status, "max_wer", lambda r: reason_code(r) == "wer")
        clips = _quality_clips(table, dialogue)
        q_judged = {}
        if clips is not None:
            for rule in QUALITY_RULES:
                q_judged[rule] = self._rejudge(table, reason, status, rule, partial(_fails, rule))
        for i, rid in enumerate(ids):
            fact = RowFact(rid, status, source[i] or "", float(seconds[i]), wer[i], reason[i] or "",
                           status == "kept" or judged.get(i, False), _parse_meta(metas[i], path, rid), path, i)
            if clips is not None:
                fact.clips = clips[i]
                fact.quality = {c: worst(c, [x[c] for x in clips[i]]) for c in QUALITY_COLUMNS}
                fact.q_eligible = {rule: status == "kept" or q_judged[rule].get(i, False) for rule in QUALITY_RULES}
            self.facts.append(fact)

    def _rejudge(self, table: pa.Table, reason: list, status: str, rule: str, failed_on) -> dict[int, bool]:
        """Rejected rows that pass every rule but `rule` (judged again with it off). Only rows whose reason is that
        rule's (`failed_on(reason)`) can: any other reason names a rule that stays on."""
        if status != "rejected" or self.rules is None:
            return {}
        rules = dataclasses.replace(self.rules, **{rule: None})
        idx = [i for i, r in enumerate(reason) if failed_on(r or "")]
        if not idx:
            return {}
        if row_kind(table.column_names) == DIALOGUE:
            sub = table.select(["turns"]).take(idx).column("turns").combine_chunks()
            flat, offs = sub.flatten(), sub.offsets.to_pylist()
            names = [n for n in ("role", *JUDGED, *QUALITY_COLUMNS) if flat.type.get_field_index(n) >= 0]
            f = {k: flat.field(k).to_pylist() for k in names}
            rows = [{"turns": [{k: f[k][j] for k in names} for j in range(offs[r], offs[r + 1])]} for r in range(len(idx))]
        else:
            names = [n for n in (*JUDGED, *QUALITY_COLUMNS) if n in table.column_names]
            rows = table.select(names).take(idx).to_pylist()
        return {i: _scored(row) and decide(row, rules)[0] for i, row in zip(idx, rows)}


JUDGED = ("wer", "cer", "duration_s", "n_ref_words", "n_del", "n_ins")  # what the ASR rules read


def _fails(rule: str, reason: str) -> bool:
    """Whether `reason` names quality rule `rule` (`dnsmos: ovrl ...` for min_dnsmos_ovrl)."""
    code = reason_code(reason)
    if rule.startswith("min_dnsmos_"):
        return code == "dnsmos" and reason.split(":", 1)[1].split()[0] == rule.rsplit("_", 1)[1]
    return code == {"min_speech_ratio": "speech_ratio", "max_lead_silence_s": "lead_silence",
                    "max_trail_silence_s": "trail_silence"}[rule]


def _quality_clips(table: pa.Table, dialogue: bool) -> list[list[dict]] | None:
    """Per row, its scored clips' quality values and WER; None when the table has no quality scores."""
    if dialogue:
        turns = table.column("turns").combine_chunks()
        flat = turns.flatten()
        if flat.type.get_field_index(QUALITY_COLUMNS[0]) < 0:
            return None
        cols = {c: flat.field(c).to_pylist() for c in (*QUALITY_COLUMNS, "wer")}
        offs = turns.offsets.to_pylist()
        spans = [range(offs[r], offs[r + 1]) for r in range(table.num_rows)]
    else:
        if QUALITY_COLUMNS[0] not in table.column_names:
            return None
        cols = {c: table.column(c).to_pylist() for c in (*QUALITY_COLUMNS, "wer")}
        spans = [range(r, r + 1) for r in range(table.num_rows)]
    out = [[{c: cols[c][j] for c in cols} for j in span if any(cols[c][j] is not None for c in QUALITY_COLUMNS)] for span in spans]
    return out if any(out) else None


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
