"""The report's "duplicates" section: what `pipelines.dedup` found, to hear before trusting it.

Reads a dedup output folder as that job writes it -- `decisions/*.parquet` (`utt_id`, `folder`, `cluster_id`,
`cluster_size`, `keep`, `reason`, `score`, `matched_utt_id`, `matched_folder`; other columns are ignored) and
`_summary.json` (`rows`, `clusters`, `dropped_rows_by_source`, `dropped_hours_by_source`) -- file by file,
keeping only the largest clusters and the first eval overlaps, so a dedup run over millions of rows reads
in flat memory. For each listed cluster two members get a player (the kept representative and a dropped
copy), their audio found in the output folder the decision names (shard FLAC, source file with
`--audio-manifest`, or codes decoded with `--codec`: `listen.ClipAudio`).

    >>> part, uris = dedup_section("out/dedup", ListenOptions(codec="tiny"))
    >>> part["largest_clusters"][0]["cluster_size"]
"""

from __future__ import annotations

import base64
import heapq
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from filtering.audit.listen import MIME, ClipAudio, ListenOptions, _source_refs, encode_clip
from filtering.audit.read import data_files, fetch_rows
from tokenization import storage
from tokenization.dialogue_schema import DIALOGUE, FILTER_DIALOGUE, ID_COLUMN, TTS, USER, detect_kind
from tokenization.errors import UserError

DECISIONS, SUMMARY = "decisions", "_summary.json"
COLUMNS = ("utt_id", "folder", "cluster_id", "cluster_size", "keep", "reason", "score", "matched_utt_id", "matched_folder")
EVAL_OVERLAP = "eval_overlap"
N_CLUSTERS = 10  # largest clusters listed
N_MEMBERS = 20  # members listed per cluster (its size is always shown)
N_EVAL = 50  # eval overlaps listed (all are counted)


def _decision_files(folder: str) -> list[str]:
    files = storage.list_files(storage.join(folder, DECISIONS), ".parquet")
    if not files:
        raise UserError(f"--dedup {folder}: no {DECISIONS}/*.parquet; pass the --output folder of pipelines.dedup")
    return files


def _read(path: str, columns: tuple[str, ...]) -> pa.Table:
    with storage.open_input(path) as f:
        pf = pq.ParquetFile(f)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise UserError(f"{path}: no column {', '.join(missing)}; a pipelines.dedup decisions file has {', '.join(COLUMNS)}")
        return pf.read(columns=list(columns))


def _row(r: dict) -> dict:
    return {"utt_id": r["utt_id"], "folder": r["folder"], "keep": bool(r["keep"]), "reason": r["reason"] or "",
            "score": None if r["score"] is None else round(float(r["score"]), 4), "matched_utt_id": r["matched_utt_id"] or "",
            "matched_folder": r["matched_folder"] or ""}


def read_decisions(folder: str) -> dict:
    """Counts, the `N_CLUSTERS` largest clusters (members listed up to `N_MEMBERS`, kept first) and the first
    `N_EVAL` eval overlaps of a dedup output, read in two passes over its decision files."""
    files = _decision_files(folder)
    sizes: dict[int, int] = {}
    rows = dropped = 0
    by_reason: dict[str, int] = {}
    evals: list[dict] = []
    for path in files:  # pass 1: counts, the largest clusters, the eval overlaps
        t = _read(path, COLUMNS)
        rows += t.num_rows
        dropped += t.num_rows - pc.sum(pc.cast(t.column("keep"), pa.int64())).as_py() if t.num_rows else 0
        for r in t.group_by("reason").aggregate([("utt_id", "count")]).to_pylist():
            if r["reason"]:
                by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + r["utt_id_count"]
        g = t.group_by("cluster_id").aggregate([("cluster_size", "max")])
        sizes.update(zip(g.column("cluster_id").to_pylist(), g.column("cluster_size_max").to_pylist()))
        sizes = dict(heapq.nsmallest(N_CLUSTERS, sizes.items(), key=lambda kv: (-kv[1], kv[0])))
        if len(evals) < N_EVAL:
            e = t.filter(pc.equal(t.column("reason"), EVAL_OVERLAP)).slice(0, N_EVAL - len(evals))
            evals += [_row(r) for r in e.to_pylist()]
    top = [c for c, n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])) if n > 1]
    members: dict[int, list[dict]] = {c: [] for c in top}
    wanted = pa.array(top, pa.int64())
    for path in files:  # pass 2: the listed clusters' members
        t = _read(path, COLUMNS)
        for r in t.filter(pc.is_in(t.column("cluster_id"), value_set=wanted)).to_pylist():
            members[r["cluster_id"]].append(_row(r))
    clusters = []
    for c in top:
        ms = sorted(members[c], key=lambda m: (not m["keep"], m["folder"], m["utt_id"]))
        clusters.append({"cluster_id": c, "cluster_size": sizes[c], "members": ms[:N_MEMBERS]})
    n_eval = by_reason.get(EVAL_OVERLAP, 0)
    return {"decisions": {"rows": rows, "dropped": dropped, "by_reason": dict(sorted(by_reason.items()))},
            "largest_clusters": clusters, "eval_overlaps": {"n": n_eval, "rows": evals}}


def _find_rows(folder: str, ids: set[str]) -> tuple[str, dict[str, dict]]:
    """(kind, {id: full row}) of the rows of an output folder whose id is in `ids` (id column first, then only
    the row groups holding them)."""
    kind = detect_kind(folder)
    id_col = ID_COLUMN[DIALOGUE if kind == FILTER_DIALOGUE else TTS]
    wanted: dict[str, list[int]] = {}
    at: dict[tuple[str, int], str] = {}
    for _, path in data_files(folder, kind):
        with storage.open_input(path) as f:
            got = pq.ParquetFile(f).read(columns=[id_col]).column(0).to_pylist()
        for i, rid in enumerate(got):
            if rid in ids:
                wanted.setdefault(path, []).append(i)
                at[(path, i)] = rid
    return kind, {at[k]: row for k, row in fetch_rows(wanted).items()}


def _clip(kind: str, row: dict) -> tuple[int, dict]:
    """The clip to play of a row: an utterance itself; a dialogue's first spoken (non-user) turn."""
    if kind != FILTER_DIALOGUE:
        return 0, {**row, "role": TTS}
    turns = row["turns"]
    j = next((k for k, t in enumerate(turns) if t["role"] != USER), 0)
    return j, turns[j]


def _players(clusters: list[dict], opts: ListenOptions) -> tuple[dict[str, str], list[str]]:
    """Data URIs keyed `dedup:<folder>:<utt_id>` for two members of each listed cluster; notes."""
    picks = []
    for c in clusters:
        kept = [m for m in c["members"] if m["keep"]]
        other = [m for m in c["members"] if not m["keep"]] or c["members"][1:]
        c["players"] = [dict(m) for m in (kept[:1] or c["members"][:1]) + other[:1]]
        picks += c["players"]
    by_folder: dict[str, set[str]] = {}
    for m in picks:
        by_folder.setdefault(m["folder"], set()).add(m["utt_id"])
    uris, notes, total, missing = {}, [], 0, 0
    for folder, ids in sorted(by_folder.items()):
        if not storage.exists(folder):
            missing += len(ids)
            continue
        kind, rows = _find_rows(folder, ids)
        audio = ClipAudio(opts, _source_refs(kind, opts.audio_manifest, ids))
        for rid in sorted(ids):
            if rid not in rows:
                missing += 1
                continue
            j, clip = _clip(kind, rows[rid])
            samples, rate, route = audio.get(rid, j, clip)
            key = f"dedup:{folder}:{rid}"
            if samples is None or not len(samples):
                notes.append(f"{rid}: {route}")
                continue
            data = encode_clip(samples, rate)
            if total + len(data) > opts.max_bytes:
                notes.append(f"{rid}: not embedded: audio size cap reached (raise --max-audio-mb)")
                continue
            total += len(data)
            uris[key] = f"data:{MIME};base64,{base64.b64encode(data).decode()}"
            for c in clusters:
                for m in c["players"]:
                    if (m["folder"], m["utt_id"]) == (folder, rid):
                        m.update(clip=key, seconds=round(len(samples) / rate, 3), bytes=len(data), played=route)
    if missing:
        notes.append(f"{missing} cluster members not found in the output folder their decision names: not played.")
    return uris, notes


def dedup_section(folder: str, opts: ListenOptions) -> tuple[dict, dict[str, str]]:
    """The `dedup` part of audit.json and the players' data URIs (kept out of the JSON).

    Returns:
        ({"folder", "rows", "clusters", "dropped_rows_by_source": {source: {reason: n}}, "dropped_hours_by_source",
          "decisions": {"rows", "dropped", "by_reason"}, "largest_clusters": [{"cluster_id", "cluster_size", "members",
          "players"}], "eval_overlaps": {"n", "rows"}, "n_clips", "bytes", "notes"}, {clip key: data URI}).
    """
    path = storage.join(folder, SUMMARY)
    if not storage.exists(path):
        raise UserError(f"--dedup {folder}: no {SUMMARY}; pass the --output folder of a finished pipelines.dedup run")
    summary = json.loads(storage.read_text(path))
    part = {"folder": folder, "rows": summary.get("rows"), "clusters": summary.get("clusters"),
            "dropped_rows_by_source": summary.get("dropped_rows_by_source", {}),
            "dropped_hours_by_source": summary.get("dropped_hours_by_source", {}), **read_decisions(folder)}
    uris, notes = _players(part["largest_clusters"], opts) if opts.max_examples > 0 else ({}, [])
    part.update(n_clips=len(uris), bytes=sum(m.get("bytes", 0) for c in part["largest_clusters"] for m in c.get("players", [])),
                notes=notes)
    return part, uris
