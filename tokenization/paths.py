"""Input listings and audio-path resolution shared by every reader.

`list_input_files` expands an `--input` (a file, a folder, or a glob; local or `s3://`) into
the files a reader lists units from: one listing call (paged by pyarrow on S3), never a
per-object open. `resolve_audio_path` turns a path written in a manifest, cut, tar sidecar or
dialogue turn into one the job may read: relative paths resolve against the manifest's folder
(or `--audio-root`) and must stay inside it, so a third party's manifest cannot pull
`../../etc/...` into shards; absolute paths and URIs are taken as given.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from tokenization import storage
from tokenization.errors import UserError

GLOB_CHARS = "*?["


class OutsidePath(ValueError):
    """A relative path that leaves its root; the message is the quarantine reason."""


@dataclass(frozen=True)
class InputFile:
    uri: str  # local absolute path or s3:// URI
    size: int
    version: str  # mtime_ns: with the size, what the run id hashes


def _info(prefix: str, i: pafs.FileInfo) -> InputFile:
    return InputFile(prefix + i.path, int(i.size or 0), str(i.mtime_ns or ""))


def list_input_files(uri: str, suffixes: tuple[str, ...]) -> list[InputFile]:
    """Sorted files of an input: the file itself, files under a folder (recursive) or a glob's matches.

    Args:
        uri: a file, a folder or a glob (`data/train-*.parquet`, `s3://b/Emilia/EN/*.tar`).
        suffixes: file-name endings a folder or glob keeps (lower-case, e.g. (".tar", ".tar.gz")).
    Raises:
        UserError: nothing there, or nothing with one of `suffixes`.
    """
    prefix = "s3://" if uri.startswith("s3://") else ""
    fs, path = storage.filesystem(uri)
    if any(c in path for c in GLOB_CHARS):
        head = path[: min(path.index(c) for c in GLOB_CHARS if c in path)]
        base = head.rsplit("/", 1)[0]
        recursive = "/" in path[len(base) + 1:]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
        files = [i for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"--input {uri}: no such file or folder")
        if info.type == pafs.FileType.File:
            return [_info(prefix, info)]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = [i for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(suffixes)]
    if not files:
        raise UserError(f"--input {uri}: no {'/'.join(suffixes)} files there")
    return sorted((_info(prefix, i) for i in files), key=lambda f: f.uri)


def input_root(uri: str) -> str:
    """The folder an `--input`'s units are named relative to: a folder itself, a file's folder, or the
    part of a glob before its first wildcard (cut at a `/`); absolute for local paths, as listed URIs are.
    Unit keys hash the path under it, so shard names do not depend on what else is listed
    (`tokenization.units.unit_key`)."""
    prefix = "s3://" if uri.startswith("s3://") else ""
    fs, path = storage.filesystem(uri)
    if any(c in path for c in GLOB_CHARS):
        path = path[: min(path.index(c) for c in GLOB_CHARS if c in path)].rsplit("/", 1)[0]
    elif fs.get_file_info(path).type == pafs.FileType.File:
        path = path.rstrip("/").rsplit("/", 1)[0]
    return prefix + path.rstrip("/")


def nearest_existing(path: str) -> str:
    """Local `path` made absolute, or its nearest existing ancestor: where a write to it would land."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def folder_of(uri: str) -> str:
    """The folder a manifest's relative paths resolve against (absolute for local files)."""
    folder = uri.rsplit("/", 1)[0] if "/" in uri else "."
    return folder if "://" in folder else os.path.abspath(folder)


def is_absolute(path: str) -> bool:
    return "://" in path or path.startswith("/")


@functools.lru_cache(maxsize=4096)
def _real_dir(path: str) -> str:
    """`os.path.realpath` of a folder, cached: a manifest names thousands of files per folder, and resolving
    each one's folder again (an lstat per path component) was most of a record's reading cost."""
    return os.path.realpath(path)


def resolve_audio_path(base_dir: str, path: str, audio_root: str = "", allow_outside: bool = False) -> str:
    """A manifest's audio path -> an absolute path or URI the job may read.

    Relative paths resolve against `audio_root` when set, else `base_dir`, and must stay
    inside that root (after `..` and, for local files, symlinks), unless `allow_outside`.

    Raises:
        OutsidePath: the path escapes its root (the message names both and the flag).
    """
    if is_absolute(path):
        return path
    root = (audio_root or base_dir).rstrip("/") or "/"
    scheme, sep, root_path = root.partition("://")
    if not sep:
        scheme, root_path = "", os.path.abspath(root)
    joined = posixpath.normpath(posixpath.join(root_path, path))
    resolved = f"{scheme}://{joined}" if scheme else joined
    if allow_outside:
        return resolved
    inside = joined == root_path or joined.startswith(root_path.rstrip("/") + "/")
    if inside and not scheme:  # a symlink inside the folder may still point out of it
        real_root = _real_dir(root_path)
        real = os.path.realpath(joined) if os.path.islink(joined) else posixpath.join(_real_dir(posixpath.dirname(joined)),
                                                                                       posixpath.basename(joined))
        inside = real == real_root or real.startswith(real_root.rstrip("/") + "/")
    if not inside:
        raise OutsidePath(f"audio path {path!r} escapes {root} (pass --allow-outside-paths to read files outside it)")
    return resolved
