"""The audit's scan as per-shard partial aggregates: what makes a million-row folder an hour-free audit.

Each data file is read once, in a task of its own (`scan_file`), and reduced to a `FilePartial`: counts,
mergeable summaries (`sketch.Sketch`, `Moments`, samples), the first examples in file order, code usage,
the what-if curves' counts per threshold. Partials merge in file order (`FilePartial.merge`), so the
driver holds one partial whatever the row count and the first examples are those a single reader finds.

What needs every row at once -- exact-duplicate groups (`audio_sha1`, normalized text), text and speaker
leakage, distinct texts -- is keyed: a file returns its (key, id, split, order) rows split into hash parts
by CRC-32 of the key, so every occurrence of a key lands in the same part, and each part is reduced on
its own (`reduce_part`) to counts and the first groups by key (the engine's duplicate pre-pass, the same
way). No Ray here: `pipelines.audit` maps these with Ray tasks, `scan_local` runs them in one process.

    >>> merged, groups = scan_local(ScanSpec(kind, rules, LintConfig()), data_files(folder, kind))
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filtering.audit import lint as L
from filtering.audit.read import FactCollector, RowFact, data_files, quarantine_summary, read_manifest, read_without_audio
from filtering.audit.sketch import Moments, Sketch, curve_of, merge_dict, merge_sample, sample_of
from filtering.audit.stats import N_EXAMPLES, _Acc, _dialogue_table, _token_table
from filtering.audit.quality import quality_meta
from filtering.audit.quality_scores import META_DNSMOS, N_LOWEST, quality_curves, quality_scores, thresholds as quality_thresholds
from filtering.audit.threshold import threshold_curve, thresholds as wer_thresholds
from filtering.quality import QUALITY_COLUMNS
from filtering.rules import QUALITY_RULES, Rules
from tokenization.dialogue_schema import DIALOGUE, FILTER_DIALOGUE, ID_COLUMN, TOKENIZE, TTS, detect_kind
from tokenization.schema import ShardCodec

MAX_DUP_GROUPS = 20  # duplicate groups listed in `duplicates.groups`
MAX_GROUP_IDS = 1000  # ids listed per group there (a group of a million copies is counted, not listed)
KEY_SCHEMA = pa.schema([("key", pa.string()), ("id", pa.string()), ("split", pa.string()), ("seq", pa.int64())])
SPACES = ("dup", "sha", "text", "speaker", "clip_text")  # all rows' audio_sha1; kept rows': sha1, text, speaker, clip text


@dataclass(frozen=True)
class ScanSpec:
    """What every file task needs: the folder kind, the run's rules (None: a tokenize run), the lint thresholds,
    and how many hash parts the keyed rows go to."""

    kind: str
    rules: Rules | None
    lint_cfg: L.LintConfig
    parts: int = 1

    def wer_thresholds(self) -> list:
        return wer_thresholds(self.rules.max_wer if self.rules else None)

    def quality_thresholds(self, rule: str) -> list:
        return quality_thresholds(rule, getattr(self.rules, rule) if self.rules is not None else None)


def _merge_curves(a: dict, b: dict) -> dict:
    for k, c in b.items():
        a[k] = a[k].merge(c) if k in a else c
    return a


@dataclass
class LintPart:
    """A per-clip check's figures so far: offending count, checked, the first examples, the fix text."""

    count: int
    checked: int
    examples: list
    result: L.LintResult  # the first file's result: name, unit, fix, skipped

    def merge(self, o: "LintPart") -> "LintPart":
        return LintPart(self.count + o.count, self.checked + o.checked, (self.examples + o.examples)[:L.N_EXAMPLES], self.result)


@dataclass
class FilePartial:
    """Everything the audit keeps of one data file (or, merged, of every file so far)."""

    meta: dict = field(default_factory=dict)
    lint_meta: dict = field(default_factory=dict)
    n: dict = field(default_factory=lambda: {"kept": 0, "rejected": 0})
    seconds: dict = field(default_factory=lambda: {"kept": 0.0, "rejected": 0.0})
    reasons: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)
    code_counts: np.ndarray | None = None
    sketches: dict = field(default_factory=dict)  # name -> Sketch, or name -> {group: Sketch}
    frames: dict = field(default_factory=lambda: {"n": 0, "bad": 0, "examples": [], "max_abs": 0.0, "sample": []})
    lint: dict = field(default_factory=dict)  # check name -> LintPart
    lint_rows: int = 0
    wer_curve: dict = field(default_factory=dict)  # source ("" = all) -> Curve
    wer_counts: dict = field(default_factory=lambda: {"n_rows": 0, "n_eligible": 0, "n_unscored": 0})
    q_curves: dict = field(default_factory=dict)  # rule -> {source ("" = all) -> Curve}
    q_counts: dict = field(default_factory=dict)  # rule -> {"any", "n_rows", "n_eligible"}
    meta_keys: dict = field(default_factory=dict)  # meta key -> {"by_source": {source: Sketch}, "wer": Moments, "sample"}
    n_meta: int = 0
    q_values: dict = field(default_factory=dict)  # quality column -> {"all": Sketch, "by_source": {source: Sketch}}
    q_pairs: dict = field(default_factory=dict)  # "wer" | "meta" -> {"m": Moments, "sample": [...], "d": sum, "ad": sum}
    worst_kept: list = field(default_factory=list)  # [(-wer, id)]
    lowest_dnsmos: list = field(default_factory=list)  # [(ovrl, id)]

    def merge(self, o: "FilePartial") -> "FilePartial":
        """`o` holds the files after this one's."""
        self.meta, self.lint_meta = self.meta or o.meta, self.lint_meta or o.lint_meta
        for s in ("kept", "rejected"):
            self.n[s] += o.n[s]
            self.seconds[s] += o.seconds[s]
        for code, k in o.reasons.items():
            self.reasons[code] = self.reasons.get(code, 0) + k
        for code, exs in o.examples.items():
            self.examples[code] = (self.examples.get(code, []) + exs)[:N_EXAMPLES]
        if o.code_counts is not None:
            self.code_counts = o.code_counts.copy() if self.code_counts is None else self.code_counts + o.code_counts
        for name, s in o.sketches.items():
            mine = self.sketches.get(name)
            self.sketches[name] = s if mine is None else (mine.merge(s) if isinstance(s, Sketch) else merge_dict(mine, s))
        f, g = self.frames, o.frames
        self.frames = {"n": f["n"] + g["n"], "bad": f["bad"] + g["bad"], "examples": (f["examples"] + g["examples"])[:N_EXAMPLES],
                       "max_abs": max(f["max_abs"], g["max_abs"]), "sample": merge_sample(f["sample"], g["sample"])}
        for name, part in o.lint.items():
            self.lint[name] = self.lint[name].merge(part) if name in self.lint else part
        self.lint_rows += o.lint_rows
        _merge_curves(self.wer_curve, o.wer_curve)
        self.wer_counts = {k: v + o.wer_counts[k] for k, v in self.wer_counts.items()}
        for rule, by in o.q_curves.items():
            _merge_curves(self.q_curves.setdefault(rule, {}), by)
            c = self.q_counts.setdefault(rule, {"any": False, "n_rows": 0, "n_eligible": 0})
            oc = o.q_counts[rule]
            c.update(any=c["any"] or oc["any"], n_rows=c["n_rows"] + oc["n_rows"], n_eligible=c["n_eligible"] + oc["n_eligible"])
        for k, v in o.meta_keys.items():
            mine = self.meta_keys.setdefault(k, {"by_source": {}, "wer": Moments(), "sample": []})
            merge_dict(mine["by_source"], v["by_source"])
            mine["wer"] = mine["wer"].merge(v["wer"])
            mine["sample"] = merge_sample(mine["sample"], v["sample"])
        self.n_meta += o.n_meta
        for c, v in o.q_values.items():
            mine = self.q_values.setdefault(c, {"all": Sketch(), "by_source": {}})
            mine["all"].merge(v["all"])
            merge_dict(mine["by_source"], v["by_source"])
        for k, v in o.q_pairs.items():
            mine = self.q_pairs.setdefault(k, {"m": Moments(), "sample": [], "d": 0.0, "ad": 0.0})
            mine.update(m=mine["m"].merge(v["m"]), sample=merge_sample(mine["sample"], v["sample"]), d=mine["d"] + v["d"], ad=mine["ad"] + v["ad"])
        self.worst_kept = heapq.nsmallest(N_EXAMPLES, self.worst_kept + o.worst_kept)
        self.lowest_dnsmos = heapq.nsmallest(N_LOWEST, self.lowest_dnsmos + o.lowest_dnsmos)
        return self


# ---- one file --------------------------------------------------------------------------------
def _by(items: list[dict], key: str, value: str) -> dict[str, Sketch]:
    groups: dict[str, list] = defaultdict(list)
    for it in items:
        groups[it[key] or "(none)"].append(it[value])
    return {k: Sketch.of(v) for k, v in groups.items()}


def _stats(p: FilePartial, acc: _Acc) -> list[tuple[str, str]]:
    """The stats part of one file's accumulator; returns its (audio_sha1, id) pairs (duplicate groups)."""
    p.meta = acc.meta
    for r in acc.rows:
        p.n[r["status"]] += 1
        p.seconds[r["status"]] += r["seconds"]
    p.reasons, p.examples, p.code_counts = dict(acc.reasons), dict(acc.examples), acc.code_counts
    scored = [it for it in acc.items if it["wer"] is not None]
    by_status: dict[str, list] = defaultdict(list)
    for it in scored:
        by_status[it["status"]].append(it["wer"])
    p.sketches = {"wer": Sketch.of(it["wer"] for it in scored), "wer.by_source": _by(scored, "source", "wer"),
                  "wer.by_speaker": _by(scored, "speaker", "wer"), "wer.by_status": {k: Sketch.of(v) for k, v in by_status.items()},
                  "duration": Sketch.of(it["duration"] for it in acc.items), "duration.by_source": _by(acc.items, "source", "duration"),
                  "duration.by_speaker": _by(acc.items, "speaker", "duration"),
                  "speaking_rate": Sketch.of(it["rate"] for it in acc.items),
                  "speaking_rate.by_speaker": _by([it for it in acc.items if it["rate"] is not None], "speaker", "rate")}
    bad = [{"id": i, "n_frames": n, "expected": round(e, 2)} for i, n, e in acc.frames if abs(n - math.ceil(e - 1e-6)) > 1]
    p.frames = {"n": len(acc.frames), "bad": len(bad), "examples": bad[:N_EXAMPLES],
                "max_abs": max((abs(n - e) for _, n, e in acc.frames), default=0.0),
                "sample": sample_of((i, (n, e)) for i, n, e in acc.frames)}
    return [(r["sha1"], r["id"]) for r in acc.rows if r["sha1"]]


def _lint(p: FilePartial, c: L.LintCollector, cfg: L.LintConfig) -> dict[str, list[tuple]]:
    """The per-clip checks of one file's kept rows; returns its keyed rows for the checks that group rows."""
    p.lint_meta, p.lint_rows = c.meta, len(c.rows)
    clips = c.clips
    for r in (L.check_user_audio_length(clips, cfg), L.check_talker_frames(clips, cfg), L.check_tokenizer(clips, cfg.tokenizer),
              L.check_script(clips), L.check_speaking_rate(clips, cfg), L.check_frames_per_second(clips, c.frame_rate, cfg)):
        p.lint[r.name] = LintPart(r.count, r.checked, r.examples, r)
    speakers = sorted({(r.speaker, r.split) for r in c.rows if r.speaker})
    return {"sha": [(r.audio_sha1, r.id, "") for r in c.rows],
            "text": [(L.normalize(r.text, r.language), r.id, r.split) for r in c.rows],
            "speaker": [(s, "", split) for s, split in speakers],
            "clip_text": [(t, "", "") for t in sorted({x.text for x in clips if x.text})] if cfg.tokenizer else []}


def _wer(p: FilePartial, spec: ScanSpec, facts: list[RowFact]) -> None:
    rows_in = [f for f in facts if f.status in ("kept", "rejected")]
    thresholds = spec.wer_thresholds()
    keep_at = lambda v, t: v <= np.float32(t)  # noqa: E731  (float32, as stored)
    by_src: dict[str, list[RowFact]] = defaultdict(list)
    for f in rows_in:
        by_src[f.source or "(none)"].append(f)
    for src, fs in [("", rows_in), *by_src.items()]:
        ok = [f for f in fs if f.eligible and f.wer is not None]
        unscored = [f for f in fs if f.status == "kept" and f.wer is None]
        p.wer_curve[src] = curve_of(np.asarray([f.wer for f in ok], np.float32), np.asarray([f.seconds for f in ok], np.float64),
                                  thresholds, keep_at, len(unscored), sum(f.seconds for f in unscored))
    p.wer_counts = {"n_rows": len(rows_in), "n_eligible": sum(f.eligible for f in rows_in),
                    "n_unscored": sum(1 for f in rows_in if f.status == "rejected" and f.wer is None
                                      and not f.reason.startswith("no_scored_turn"))}


def _quality(p: FilePartial, spec: ScanSpec, facts: list[RowFact]) -> None:
    rows_in = [f for f in facts if f.status in ("kept", "rejected") and f.quality is not None]
    by_src: dict[str, list[RowFact]] = defaultdict(list)
    for f in rows_in:
        by_src[f.source or "(none)"].append(f)
    for rule, (col, _, kind) in QUALITY_RULES.items():
        keep_at = (lambda v, t: v >= np.float32(t)) if kind == "min" else (lambda v, t: v <= np.float32(t))
        curves = {}
        for src, fs in [("", rows_in), *by_src.items()]:
            ok = [f for f in fs if f.q_eligible and f.q_eligible[rule]]
            has = [f for f in ok if f.quality[col] is not None]
            curves[src] = curve_of(np.asarray([f.quality[col] for f in has], np.float32), np.asarray([f.seconds for f in has], np.float64),
                                 spec.quality_thresholds(rule), keep_at, len(ok) - len(has),
                                 sum(f.seconds for f in ok if f.quality[col] is None))
        p.q_curves[rule] = curves
        p.q_counts[rule] = {"any": any(f.quality[col] is not None for f in rows_in), "n_rows": len(rows_in),
                            "n_eligible": sum(bool(f.q_eligible[rule]) for f in rows_in)}
    values: dict[str, dict[str, list]] = {c: defaultdict(list) for c in QUALITY_COLUMNS}
    wer_pairs, meta_pairs = [], []
    for f in facts:
        if not f.clips:
            continue
        for k, clip in enumerate(f.clips):
            for c in QUALITY_COLUMNS:
                if clip[c] is not None:
                    values[c][f.source or "(none)"].append(float(clip[c]))
            if clip["dnsmos_ovrl"] is not None and clip["wer"] is not None:
                wer_pairs.append((f"{f.id}#{k}", (float(clip["dnsmos_ovrl"]), float(clip["wer"]))))
        m = (f.meta or {}).get(META_DNSMOS)
        if isinstance(m, (int, float)) and not isinstance(m, bool) and f.quality["dnsmos_ovrl"] is not None:
            meta_pairs.append((f.id, (float(m), float(f.quality["dnsmos_ovrl"]))))
    for c, by in values.items():
        if by:
            p.q_values[c] = {"all": Sketch.of(x for v in by.values() for x in v), "by_source": {s: Sketch.of(v) for s, v in by.items()}}
    for name, pairs in (("wer", wer_pairs), ("meta", meta_pairs)):
        d = np.asarray([b - a for _, (a, b) in pairs], np.float64)
        p.q_pairs[name] = {"m": Moments.of([xy for _, xy in pairs]), "sample": sample_of(pairs), "d": float(d.sum()), "ad": float(np.abs(d).sum())}
    kept = [f for f in facts if f.status == "kept" and f.quality and f.quality["dnsmos_ovrl"] is not None]
    p.lowest_dnsmos = heapq.nsmallest(N_LOWEST, ((f.quality["dnsmos_ovrl"], f.id) for f in kept))


def _meta(p: FilePartial, facts: list[RowFact]) -> None:
    values: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    pairs: dict[str, list] = defaultdict(list)
    for f in facts:
        if not f.meta:
            continue
        p.n_meta += 1
        for k, v in f.meta.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            values[k][f.source or "(none)"].append(float(v))
            if f.wer is not None:
                pairs[k].append((f.id, (float(v), float(f.wer))))
    for k, by in values.items():
        p.meta_keys[k] = {"by_source": {s: Sketch.of(v) for s, v in by.items()}, "wer": Moments.of([xy for _, xy in pairs[k]]),
                          "sample": sample_of(pairs[k])}


def _keyed(rows: dict[str, list[tuple]], index: int, parts: int) -> list[dict[str, pa.Table]]:
    """{space: [(key, id, split)]} in file order -> per hash part, {space: table of key, id, split, seq}."""
    out = [{} for _ in range(parts)]
    for space, triples in rows.items():
        triples = [(k, i, s, (index << 32) | j) for j, (k, i, s) in enumerate(triples) if k]
        if not triples:
            continue
        part = np.fromiter((zlib.crc32(t[0].encode()) % parts for t in triples), np.int64, len(triples))
        cols = list(zip(*triples))
        table = pa.table([pa.array(cols[0], pa.string()), pa.array(cols[1], pa.string()), pa.array(cols[2], pa.string()),
                          pa.array(cols[3], pa.int64())], schema=KEY_SCHEMA)
        for k in range(parts):
            sub = table.filter(pa.array(part == k))
            if sub.num_rows:
                out[k][space] = sub
    return out


def scan_file(spec: ScanSpec, index: int, status: str, path: str) -> tuple[FilePartial, list[dict[str, pa.Table]]]:
    """One data file (the `index`-th of the folder's listing) read once, without audio: its partial, and its
    keyed rows per hash part (`spec.parts` of them)."""
    table, meta = read_without_audio(path)
    p = FilePartial()
    acc = _Acc()
    acc.meta = meta
    (_dialogue_table if spec.kind == FILTER_DIALOGUE else _token_table)(acc, table, status, meta)
    keyed: dict[str, list[tuple]] = {"dup": [(s, i, "") for s, i in _stats(p, acc)]}
    lint_rows = L.LintCollector()
    lint_rows(status, path, table, meta)
    if status == "kept":
        keyed.update(_lint(p, lint_rows, spec.lint_cfg))
    facts = FactCollector(spec.rules)
    facts(status, path, table, meta)
    if spec.kind != TOKENIZE:
        _wer(p, spec, facts.facts)
        _quality(p, spec, facts.facts)
    _meta(p, facts.facts)
    p.worst_kept = heapq.nsmallest(N_EXAMPLES, ((-f.wer, f.id) for f in facts.facts if f.status == "kept" and f.wer is not None and f.wer > 0))
    return p, _keyed(keyed, index, spec.parts)


def locate(spec: ScanSpec, status: str, path: str, ids: list[str]) -> list[RowFact]:
    """The facts (with path and row index) of one file's rows whose id is in `ids`: the rows the report plays.
    Reads the id column; the rest of the file only when it holds one of them, facts only for those rows."""
    import pyarrow.parquet as pq

    from tokenization import storage

    with storage.open_input(path) as f:
        got = pq.ParquetFile(f).read(columns=[ID_COLUMN[DIALOGUE if spec.kind == FILTER_DIALOGUE else TTS]]).column(0)
    hits = pc.indices_nonzero(pc.is_in(got, value_set=pa.array(ids, pa.string()))).to_pylist()
    if not hits:
        return []
    table, meta = read_without_audio(path)
    facts = FactCollector(spec.rules)
    facts(status, path, table.take(hits), meta)
    for f in facts.facts:
        f.index = hits[f.index]  # the row's index in the file, as fetch_rows reads it
    return facts.facts


# ---- keyed rows, per hash part -----------------------------------------------------------------
def _sorted_groups(t: pa.Table, min_count: int = 2) -> tuple[int, list[tuple[str, list[str], list[str]]]]:
    """(distinct keys, [(key, ids, splits) of each key seen at least `min_count` times, ids in file order, by key])."""
    g = t.group_by("key").aggregate([("seq", "count")])
    many = g.filter(pc.greater_equal(g.column("seq_count"), min_count)).column("key")
    d = t.filter(pc.is_in(t.column("key"), value_set=many.combine_chunks())).sort_by([("key", "ascending"), ("seq", "ascending")])
    out: list = []
    for key, rid, split in zip(*(d.column(c).to_pylist() for c in ("key", "id", "split"))):
        if not out or out[-1][0] != key:
            out.append((key, [], []))
        out[-1][1].append(rid)
        out[-1][2].append(split)
    return g.num_rows, out


def reduce_part(*keysets: dict[str, pa.Table]) -> dict:
    """The groups of one hash part: counts and the first groups by key of every keyed check."""
    r: dict = {}
    for space in SPACES:
        tables = [k[space] for k in keysets if space in k]
        t = pa.concat_tables(tables) if tables else KEY_SCHEMA.empty_table()
        if space == "speaker":
            n, groups = _sorted_groups(_speaker_rows(t))
            bad = [{"speaker": k, "splits": sorted(set(s))} for k, _, s in groups if len(set(s)) > 1]
            r[space] = {"distinct": n, "count": len(bad), "examples": bad[:L.N_EXAMPLES]}
        elif space == "clip_text":
            r[space] = {"distinct": pc.count_distinct(t.column("key")).as_py() if t.num_rows else 0}
        else:
            n, groups = _sorted_groups(t)
            if space == "dup":
                r[space] = {"count": len(groups), "rows": sum(len(ids) for _, ids, _ in groups),
                            "examples": [{"audio_sha1": k, "ids": ids[:MAX_GROUP_IDS]} for k, ids, _ in groups[:MAX_DUP_GROUPS]]}
            else:
                r[space] = {"count": len(groups), "examples": [{"key": k, "ids": ids[:5], "n": len(ids)} for k, ids, _ in groups[:L.N_EXAMPLES]]}
            if space == "text":
                leaks = []
                for k, ids, splits in groups:
                    by = defaultdict(list)
                    for i, s in zip(ids, splits):
                        by[s or "train"].append(i)
                    if by["train"] and by["test"]:
                        leaks.append({"text": k, "train": by["train"][:3], "test": by["test"][:3]})
                r["leak"] = {"distinct": n, "count": len(leaks), "examples": leaks[:L.N_EXAMPLES]}
    return r


def _speaker_rows(t: pa.Table) -> pa.Table:
    """One row per (speaker, split) pair, so a speaker's group holds its distinct splits."""
    g = t.group_by(["key", "split"]).aggregate([("seq", "min")])
    return pa.table({"key": g.column("key"), "id": pa.array([""] * g.num_rows, pa.string()), "split": g.column("split"),
                     "seq": g.column("seq_min")})


def merge_parts(results: list[dict]) -> dict:
    """The part results as one: counts added, the first groups by key kept (parts hold disjoint keys)."""
    out: dict = {}
    sort_key = {"dup": "audio_sha1", "sha": "key", "text": "key", "leak": "text", "speaker": "speaker"}
    limit = {"dup": MAX_DUP_GROUPS}
    for r in results:
        for space, v in r.items():
            m = out.setdefault(space, {k: ([] if k == "examples" else 0) for k in v})
            for k, x in v.items():
                m[k] = m[k] + x
    for space, m in out.items():
        if "examples" in m:
            m["examples"] = sorted(m["examples"], key=lambda e: e[sort_key[space]])[:limit.get(space, L.N_EXAMPLES)]
    return out


# ---- the scan, in one process ------------------------------------------------------------------
def scan_local(spec: ScanSpec, files: list[tuple[str, str]]) -> tuple[FilePartial, dict]:
    """Every file's partial merged in listing order, and the keyed checks' groups: the Ray scan's result,
    computed in this process (tests, benchmarks, one-file folders)."""
    merged, parts = FilePartial(), [[] for _ in range(spec.parts)]
    for i, (status, path) in enumerate(files):
        p, keyed = scan_file(spec, i, status, path)
        merged.merge(p)
        for k, t in enumerate(keyed):
            parts[k].append(t)
    return merged, merge_parts([reduce_part(*ts) for ts in parts])


# ---- figures ----------------------------------------------------------------------------------
def _summaries(d: dict | None) -> dict:
    return {k: s.summary() for k, s in sorted((d or {}).items())}


def stats_figures(folder: str, kind: str, manifest: dict, quarantine: dict, p: FilePartial, g: dict) -> dict:
    """The figures `stats.collect` documents, from the merged partial and groups. `quarantine`: {"n",
    "by_stage", "examples"} of the quarantine table."""
    n_kept, n_rej = p.n["kept"], p.n["rejected"]
    n_in = n_kept + n_rej + quarantine["n"]
    stage = {"stage": TOKENIZE if kind == TOKENIZE else "filter", "in": n_in, "kept": n_kept, "rejected": n_rej,
             "quarantined": quarantine["n"], "hours_kept": round(p.seconds["kept"] / 3600, 6),
             "hours_rejected": round(p.seconds["rejected"] / 3600, 6), "manifest_in": manifest.get("counts", {}).get("in"),
             "consistent": manifest.get("counts", {}).get("in") in (None, n_in)}
    codes = {}
    if p.code_counts is not None:
        cc = p.code_counts
        q = cc / np.maximum(cc.sum(axis=1, keepdims=True), 1)
        ent = -(np.where(q > 0, q * np.log2(np.where(q > 0, q, 1)), 0)).sum(axis=1)
        codes = {"n_codebooks": int(cc.shape[0]), "codebook_size": int(cc.shape[1]), "n_frames_total": int(cc[0].sum()),
                 "per_codebook": [{"codebook": k, "used": int((cc[k] > 0).sum()), "dead": int((cc[k] == 0).sum()),
                                   "entropy_bits": round(float(ent[k]), 3)} for k in range(cc.shape[0])]}
    sk, fr, dup = p.sketches, p.frames, g.get("dup", {"count": 0, "rows": 0, "examples": []})
    empty = Sketch()
    return {
        "folder": folder, "kind": kind, "run_id": manifest.get("run_id", ""),
        "codec": {k: p.meta.get(k) for k in ("codec_name", "codec_version", "frame_rate", "n_codebooks", "codebook_size")},
        "asr": manifest.get("asr", p.meta.get("asr", "")),
        "stages": [stage],
        "rejections": {"by_reason": dict(sorted(p.reasons.items())), "examples": {k: v for k, v in sorted(p.examples.items())}},
        "quarantine": {"by_stage": quarantine["by_stage"], "examples": quarantine["examples"]},
        "wer": {"all": sk.get("wer", empty).summary(), "by_source": _summaries(sk.get("wer.by_source")),
                "by_speaker": _summaries(sk.get("wer.by_speaker"))},
        "duration": {"all": sk.get("duration", empty).summary(), "by_source": _summaries(sk.get("duration.by_source")),
                     "by_speaker": _summaries(sk.get("duration.by_speaker"))},
        "speaking_rate": {"all": sk.get("speaking_rate", empty).summary(), "by_speaker": _summaries(sk.get("speaking_rate.by_speaker"))},
        "duplicates": {"n_groups": dup["count"], "n_rows": dup["rows"], "groups": dup["examples"]},
        "codes": codes,
        "frames": {"n_checked": fr["n"], "n_inconsistent": fr["bad"], "frame_rate": ShardCodec.of(p.meta).frame_rate,
                   "max_abs_diff": round(fr["max_abs"], 3), "examples": fr["examples"]},
        "_series": {"wer_by_status": sk.get("wer.by_status", {}), "wer_by_speaker": sk.get("wer.by_speaker", {}),
                    "duration": sk.get("duration", empty), "rate": sk.get("speaking_rate", empty),
                    "frames": [ne for _, _, ne in fr["sample"]], "code_counts": p.code_counts},
    }


def lint_results(p: FilePartial, g: dict, cfg: L.LintConfig) -> list[L.LintResult]:
    """Every lint check, in the report's order, from the merged partial and groups."""
    def clip_check(name: str, empty: L.LintResult) -> L.LintResult:
        part = p.lint.get(name)
        if part is None:
            return empty
        return dataclasses.replace(part.result, passed=part.count == 0, count=part.count, checked=part.checked, examples=part.examples)

    def grouped(empty: L.LintResult, key: str, checked: int) -> L.LintResult:
        r = g.get(key, {"count": 0, "examples": []})
        return dataclasses.replace(empty, passed=r["count"] == 0, count=r["count"], checked=checked, examples=r["examples"])

    frame_rate = ShardCodec.of(p.lint_meta).frame_rate
    tok = clip_check("tokenizer_vocabulary", L.check_tokenizer([], cfg.tokenizer))
    if not tok.skipped:
        tok = dataclasses.replace(tok, checked=g.get("clip_text", {}).get("distinct", 0))
    return [
        clip_check("user_audio_over_whisper_window", L.check_user_audio_length([], cfg)),
        clip_check("talker_max_frames", L.check_talker_frames([], cfg)),
        grouped(L.check_text_leakage([]), "leak", g.get("leak", {}).get("distinct", 0)),
        grouped(L.check_speaker_leakage([]), "speaker", g.get("speaker", {}).get("distinct", 0)),
        grouped(L.check_duplicate_audio([]), "sha", p.lint_rows),
        grouped(L.check_duplicate_text([]), "text", p.lint_rows),
        tok,
        clip_check("script", L.check_script([])),
        clip_check("speaking_rate", L.check_speaking_rate([], cfg)),
        clip_check("frames_per_second", L.check_frames_per_second([], frame_rate, cfg)),
    ]


def fact_figures(kind: str, rules: Rules | None, p: FilePartial) -> dict:
    """threshold_curve, quality_meta, quality_curves, quality_scores (the curves only for filter runs)."""
    out = {}
    if kind != TOKENIZE:
        out["threshold_curve"] = threshold_curve(p.wer_curve, p.wer_counts, rules.max_wer if rules else None)
    out["quality_meta"] = quality_meta(p.meta_keys, p.n_meta)
    if kind != TOKENIZE:
        out["quality_curves"] = quality_curves(p.q_curves, p.q_counts, rules)
        out["quality_scores"] = quality_scores(p.q_values, p.q_pairs)
    return out


class Runner:
    """How the scan's file tasks run: `parts` hash parts; `scan` and `locate` over the folder's files."""

    parts = 1

    def scan(self, spec: ScanSpec, files: list[tuple[str, str]]) -> tuple[FilePartial, dict]:
        raise NotImplementedError

    def locate(self, spec: ScanSpec, files: list[tuple[str, str]], ids: list[str]) -> list[RowFact]:
        raise NotImplementedError


class LocalRunner(Runner):
    """Every file in this process, one after the other."""

    def scan(self, spec: ScanSpec, files: list[tuple[str, str]]) -> tuple[FilePartial, dict]:
        return scan_local(spec, files)

    def locate(self, spec: ScanSpec, files: list[tuple[str, str]], ids: list[str]) -> list[RowFact]:
        return [f for status, path in files for f in locate(spec, status, path, ids)]


# ---- one folder, in this process ---------------------------------------------------------------
def collect(folder: str, kind: str | None = None, manifest: dict | None = None) -> dict:
    """The figures of `stats_figures` for one output folder, scanned in this process.

    Args:
        manifest: the folder's `_manifest.json` when the caller has read it already.
    """
    kind = kind or detect_kind(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    merged, groups = scan_local(ScanSpec(kind, None, L.LintConfig()), data_files(folder, kind))
    return stats_figures(folder, kind, manifest, quarantine_summary(folder), merged, groups)


def lint(folder: str, cfg: L.LintConfig | None = None) -> list[L.LintResult]:
    """Every lint check on the kept rows of a tokenize or filter output folder, scanned in this process."""
    cfg = cfg or L.LintConfig()
    kind = detect_kind(folder)
    merged, groups = scan_local(ScanSpec(kind, None, cfg), data_files(folder, kind))
    return lint_results(merged, groups, cfg)
