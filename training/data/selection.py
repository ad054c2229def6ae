"""Which rows of a data source a stage trains on, decided at load time: a WER threshold over a filter output's
kept and rejected rows (`data.sources[].max_wer`), and a nested subset by hours (`data.sources[].hours`).

Both select; neither copies data. An experiment trains one filter output at several thresholds, or one corpus
at 100 h / 1k h / 10k h, from the same folders:

    >>> sel = Selection(max_wer=0.2)
    >>> source_folders("out/filtered", sel.max_wer)        # kept/ and rejects/ of the filter output
    ['out/filtered/kept', 'out/filtered/rejects']

`max_wer` re-decides on the row's `wer` alone (the worst scored turn), whatever the filter decided: a row of
`kept/` or `rejects/` is read when `wer <= max_wer`; `.inf` reads every row, unscored ones included (the
"no filter" point). The filter encodes the assistant codes of kept rows only, so stage 3 gets no example from
a rejected row (stage 2 does): for a stage-3 sweep over thresholds, filter with a permissive `--max-wer`.

`hours` orders a source's `train` rows by a hash of their id (sha1 of `utt_id`) and keeps them until their
`duration_s` adds up to `hours`: the same rows on every worker and every run, and each subset holds every
smaller one (nested). `valid`/`test` rows are left whole, so validation losses compare across subsets.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import pyarrow as pa

from tokenization import storage
from tokenization.dedup_schema import excluded_ids
from tokenization.errors import UserError
from tokenization.schema import KEPT, REJECTS
from training.data.row_groups import TRAIN, RowGroup, read_row_group

WER, DURATION, SPLIT = "wer", "duration_s", "split"


@dataclass(frozen=True)
class Selection:
    """A source's row selection; the defaults select every row of `path`."""

    max_wer: float | None = None  # read kept/ + rejects/, keep rows with wer <= max_wer (None: the folder as it is)
    hours: float = 0.0  # nested subset of the train rows by id hash (0: every row)
    exclude: frozenset[str] = frozenset()  # ids a dedup folder drops (`data.sources[].exclude`): never loaded


def selection_of(source) -> Selection:
    """A `data.sources[]` entry's (`SourceConfig`'s) selection; its dedup folders' dropped ids are read here."""
    dedups = source.excludes()
    return Selection(source.max_wer, source.hours, excluded_ids(dedups, source.path) if dedups else frozenset())


def source_folders(path: str, max_wer: float | None) -> list[str]:
    """The shard folders a source reads: `path` itself, or with `max_wer` its filter output's `kept/` and `rejects/`.

    With `max_wer`, `path` names the filter output folder or its `kept/`; `rejects/` is read when it exists
    (the filter writes it only when it rejected something).

    Raises:
        UserError: `max_wer` is set but there is no `kept/` folder where `path` points.
    """
    if max_wer is None:
        return [path]
    root = path.rstrip("/")
    if root.rsplit("/", 1)[-1] == KEPT:
        root = root.rsplit("/", 1)[0] if "/" in root else "."
    kept, rejects = storage.join(root, KEPT), storage.join(root, REJECTS)
    if not storage.exists(kept):
        raise UserError(f"data source {path}: max_wer selects rows of a filter output's {KEPT}/ and {REJECTS}/, "
                        f"but {kept} does not exist (point path at the filter job's output folder)")
    return [kept, rejects] if storage.exists(rejects) else [kept]


def id_rank(utt_id: str) -> int:
    """A row's place in the nested-subset order: the first 8 bytes of sha1(id) as an integer."""
    return int.from_bytes(hashlib.sha1(utt_id.encode()).digest()[:8], "big")


def hours_cutoff(groups: list[RowGroup], id_column: str, hours: float) -> int | None:
    """The largest `id_rank` inside the first `hours` of train rows in rank order; None when the source has less.

    Reads only the id, `duration_s` and `split` columns of `groups`.
    """
    ranked = []
    for g in groups:
        table = read_row_group(g, [id_column, DURATION, *([SPLIT] if g.has_split else [])], None)
        splits = table.column(SPLIT).to_pylist() if g.has_split else [TRAIN] * table.num_rows
        for utt, dur, split in zip(table.column(id_column).to_pylist(), table.column(DURATION).to_pylist(), splits):
            if (split or TRAIN) == TRAIN:
                ranked.append((id_rank(utt), float(dur or 0.0)))
    ranked.sort()
    total, limit = 0.0, hours * 3600
    for rank, dur in ranked:
        total += dur
        if total >= limit:
            return rank
    return None


def filter_columns(max_wer: float | None, cutoff: int | None, id_column: str, has_split: bool,
                   exclude: frozenset[str] = frozenset()) -> list[str]:
    """The columns `keep_mask` reads."""
    cols = [WER] if max_wer is not None else []
    if cutoff is not None:
        cols += [id_column, *([SPLIT] if has_split else [])]
    elif exclude:
        cols.append(id_column)
    return cols


def keep_mask(table: pa.Table, max_wer: float | None, cutoff: int | None, id_column: str,
              exclude: frozenset[str] = frozenset()) -> list[bool]:
    """Per row of `table`: is it selected (by `max_wer` on `wer`, by `cutoff` on the id rank of train rows, and
    not in `exclude`)?"""
    keep = [True] * table.num_rows
    if exclude:
        keep = [i not in exclude for i in table.column(id_column).to_pylist()]
    if max_wer is not None:
        every = math.isinf(max_wer)
        keep = [k and (every or (w is not None and w <= max_wer)) for k, w in zip(keep, table.column(WER).to_pylist())]
    if cutoff is not None:
        splits = table.column(SPLIT).to_pylist() if SPLIT in table.column_names else [TRAIN] * table.num_rows
        ids = table.column(id_column).to_pylist()
        keep = [k and ((s or TRAIN) != TRAIN or id_rank(i) <= cutoff) for k, i, s in zip(keep, ids, splits)]
    return keep
