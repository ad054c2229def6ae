"""Parquet row groups and sharding: which (file, row group) pieces a data set has, and which reader reads which.

Only footers are read to list row groups. An epoch's row groups are shuffled with `(seed, epoch)`.
With at least as many row groups as readers, reader `i` of `n` takes groups `i, i+n, ...`; with
fewer (tiny sets), every reader walks all groups and keeps rows `i, i+n, ...`. Either way each
row is read by exactly one reader per epoch. A reader is one (world rank, data-loader worker)
pair: `shard = rank * workers + worker`.

Splits: row groups whose `split` statistics rule a split out are never opened; shards
written before the `split` column existed count as all `train` (with a warning).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tokenization import storage
from tokenization.errors import UserError

TRAIN = "train"

log = logging.getLogger(__name__)


class DataPathError(UserError, FileNotFoundError):
    """`data.path` holds no shards (or cannot be listed): the user points it elsewhere."""


@dataclass(frozen=True)
class RowGroup:
    """One row group of one Parquet file: the smallest piece a reader opens."""

    path: str
    row_group: int
    num_rows: int
    has_split: bool = False  # the file has a `split` column (else: every row is train)


def _split_range(md, row_group: int) -> tuple[str, str] | None:
    """(min, max) of the row group's `split` column from its statistics; None when unknown."""
    rg = md.row_group(row_group)
    for j in range(rg.num_columns):
        col = rg.column(j)
        if col.path_in_schema == "split":
            st = col.statistics
            return (st.min, st.max) if st is not None and st.has_min_max else None
    return None


def parquet_files(uri: str, what: str = "data.path") -> list[str]:
    """The `.parquet` files of a shard folder (or the one file `uri` names), sorted; `what` names it in errors.

    Raises:
        DataPathError: the folder cannot be listed or holds no `.parquet` file.
    """
    try:
        files = [uri] if uri.endswith(".parquet") else storage.list_files(uri, ".parquet")
    except (FileNotFoundError, NotADirectoryError, OSError) as exc:
        raise DataPathError(f"{what} {uri}: cannot list it ({exc})") from None
    if not files:
        raise DataPathError(f"{what} {uri}: no .parquet files there (point it at the tokenize/filter job's output folder)")
    return files


def list_row_groups(uri: str, split: str | None = None, what: str = "data.path") -> list[RowGroup]:
    """Every (file, row group) of the `*.parquet` files directly under a folder (local or s3://).

    `uri` may also name a single `.parquet` file; `what` names it in errors (`data.path`, a
    source of `data.sources`). Only footers are read. With `split`, row
    groups whose statistics show no row of that split are left out (files without a `split`
    column hold only train rows).
    """
    groups = []
    for path in parquet_files(uri, what):
        md, has_split = parquet_footer(path)
        if not has_split and split:
            log.warning("%s: no `split` column (written before splits existed): every row counts as train", path)
            if split != TRAIN:
                continue
        for i in range(md.num_row_groups):
            bounds = _split_range(md, i) if has_split and split else None
            if bounds is not None and not bounds[0] <= split <= bounds[1]:
                continue
            groups.append(RowGroup(path, i, md.row_group(i).num_rows, has_split))
    return groups


def parquet_footer(path: str) -> tuple[pq.FileMetaData, bool]:
    """(footer metadata, has a `split` column) of one file; a file that is not Parquet is a UserError naming it."""
    try:
        with storage.open_input(path) as f:
            pf = pq.ParquetFile(f)
            return pf.metadata, "split" in pf.schema_arrow.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())}); "
                        "remove it from data.path or rewrite it") from None


def shard_rows(groups: list[RowGroup], shard: int, n_shards: int, seed: int, epoch: int) -> Iterator[tuple[RowGroup, list[int] | None]]:
    """(row group, row indices to keep or None for all) for one reader in one epoch.

    Args:
        groups: all row groups of the data set, in a fixed order.
        shard, n_shards: this reader's index and the number of readers (world size x loader workers).
        seed, epoch: the group order is a permutation drawn from these.
    """
    order = list(groups)
    random.Random(f"{seed}/{epoch}").shuffle(order)
    if len(order) >= n_shards:
        for u in order[shard::n_shards]:
            yield u, None
        return
    offset = 0  # global row index over the shuffled groups: row r belongs to reader r % n_shards
    for u in order:
        keep = [i for i in range(u.num_rows) if (offset + i) % n_shards == shard]
        offset += u.num_rows
        if keep:
            yield u, keep


def read_row_group(group: RowGroup, columns: list[str] | None, rows: list[int] | None) -> pa.Table:
    with storage.open_input(group.path) as f:
        table = pq.ParquetFile(f).read_row_group(group.row_group, columns=columns)
    return table.take(pa.array(rows, pa.int64())) if rows is not None else table


def loader_shard(rank: int, world_size: int, worker_id: int = 0, num_workers: int = 1) -> tuple[int, int]:
    """(shard, n_shards) of one data-loader worker of one rank."""
    return rank * num_workers + worker_id, world_size * num_workers
