"""The dedup folder's contract (`pipelines.dedup`, docs/dedup.md): its file names, the decisions table and
its reasons, how a folder is named in it, and the rows it drops from a source (training's
`data.sources[].exclude`). The ground floor holds it so that the dedup job (`filtering/dedup/`), training
and the audit read one definition.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenization import storage
from tokenization.schema import KEPT, SHARDS

DECISIONS, SUMMARY = "decisions", "_summary.json"  # DEDUP/decisions/*.parquet, DEDUP/_summary.json
EXACT_AUDIO, NEAR_AUDIO, TEXT_ONLY, EVAL_OVERLAP = "exact_audio", "near_audio", "text_only", "eval_overlap"
REASONS = (EXACT_AUDIO, NEAR_AUDIO, TEXT_ONLY, EVAL_OVERLAP)
DECISIONS_SCHEMA = pa.schema([
    ("utt_id", pa.string()),  # the row's id (`dialogue_id` for dialogue rows)
    ("folder", pa.string()),  # the input output folder it came from (`folder_name`)
    ("cluster_id", pa.int64()),
    ("cluster_size", pa.int32()),
    ("keep", pa.bool_()),  # false: training drops it
    ("reason", pa.string()),  # one of REASONS; "" for a cluster's kept row
    ("score", pa.float64()),  # the similarity that matched, 1.0 for exact
    ("matched_utt_id", pa.string()),  # the row it matched; for eval_overlap the eval row
    ("matched_folder", pa.string()),
    ("duration_s", pa.float64()),
    ("file", pa.string()),  # the shard file and row it was read from
    ("row", pa.int32()),
])


def folder_name(folder: str) -> str:
    """A folder as decisions name it: an absolute local path or the s3:// URI, without a trailing slash."""
    return folder.rstrip("/") if "://" in folder else os.path.abspath(folder)


def output_folder(path: str) -> str:
    """The job output folder a source path belongs to (`OUT/shards/x.parquet`, `OUT/kept`, `OUT` -> `OUT`)."""
    p = path.rstrip("/")
    if p.endswith(".parquet"):
        p = p.rsplit("/", 1)[0]
    if p.rsplit("/", 1)[-1] in (SHARDS, KEPT):
        p = p.rsplit("/", 1)[0]
    return folder_name(p)


def has_decisions(dedup: str) -> bool:
    return storage.exists(storage.join(dedup, SUMMARY))


def excluded_ids(dedups: list[str], source_path: str) -> frozenset[str]:
    """Ids (`utt_id`, or `dialogue_id` for dialogue shards) of a source's rows that the dedup folders drop: their
    decision has `keep` false and names the source's output folder."""
    folder, out = output_folder(source_path), set()
    for dedup in dedups:
        for f in storage.list_files(storage.join(dedup, DECISIONS), ".parquet"):
            with storage.open_input(f) as fh:
                t = pq.read_table(fh, columns=["utt_id", "folder", "keep"], schema=DECISIONS_SCHEMA)
            t = t.filter(pc.and_(pc.invert(t.column("keep")), pc.equal(t.column("folder"), folder)))
            out.update(t.column("utt_id").to_pylist())
    return frozenset(out)
