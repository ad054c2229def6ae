"""The rows a dedup folder drops from one source, for training's `data.sources[].exclude` (no Ray).

A decision names the output folder its row came from (`folder`); a source is a folder of shards (`OUT`,
`OUT/shards`, `OUT/kept`) or one file of one, so the rows it loses are those of its output folder with
`keep` false.
"""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq

from filtering.dedup.decide import DECISIONS_SCHEMA
from filtering.dedup.job import DECISIONS, SUMMARY, folder_name
from tokenization import storage
from tokenization.schema import KEPT, SHARDS


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
    """Ids (`utt_id`, or `dialogue_id` for dialogue shards) of the source's rows that the dedup folders drop."""
    folder, out = output_folder(source_path), set()
    for dedup in dedups:
        for f in storage.list_files(storage.join(dedup, DECISIONS), ".parquet"):
            with storage.open_input(f) as fh:
                t = pq.read_table(fh, columns=["utt_id", "folder", "keep"], schema=DECISIONS_SCHEMA)
            t = t.filter(pc.and_(pc.invert(t.column("keep")), pc.equal(t.column("folder"), folder)))
            out.update(t.column("utt_id").to_pylist())
    return frozenset(out)
