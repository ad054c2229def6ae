"""Local paths and `s3://` URIs through one API (pyarrow.fs).

S3 credentials and endpoint come from the usual environment variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL or
AWS_ENDPOINT_URL_S3); they are never logged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pyarrow.fs as pafs


def s3_endpoint() -> tuple[str, str] | None:
    """(host[:port], scheme) from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, or None for AWS itself.

    Set explicitly because `pafs.S3FileSystem()` ignores these variables (only some pyarrow
    versions honour them, and only through `FileSystem.from_uri`).
    """
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "").strip().rstrip("/")
    if not endpoint:
        return None
    scheme, sep, host = endpoint.partition("://")
    return (host, scheme) if sep else (endpoint, "https")


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the standard AWS_* environment variables.

    Credentials are not passed here: pyarrow's default chain reads AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, ~/.aws or the instance role, so they never sit
    in our objects (a pickled filesystem sent to Ray workers carries no secret).
    """
    endpoint = s3_endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    kwargs: dict = {"region": region} if region else {}
    if endpoint:
        kwargs.update(endpoint_override=endpoint[0], scheme=endpoint[1])
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an `s3://bucket/key` URI."""
    if uri.startswith("s3://"):
        return s3_filesystem(), uri[len("s3://"):]
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    """Create a local folder; a no-op on S3 (keys need no parent)."""
    if uri.startswith("s3://"):
        return
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)


def list_files(uri: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """Sorted full URIs of files directly under a folder, or anywhere below it with `recursive` (one paged
    listing on S3); an empty list if it does not exist."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    prefix = "s3://" if uri.startswith("s3://") else ""
    return sorted(prefix + i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


@contextmanager
def open_input(uri: str) -> Iterator:
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        yield f


def read_text(uri: str) -> str:
    with open_input(uri) as f:
        return f.read().decode("utf-8")


def remove_if_exists(uri: str) -> None:
    """Delete one file or object; nothing there is fine."""
    fs, path = filesystem(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write under a hidden temporary name, then rename: a killed writer never leaves a half file.

    On S3 a single PUT is already atomic, so the object is written directly.
    """
    fs, path = filesystem(uri)
    if uri.startswith("s3://"):  # no folder markers: S3 has no folders, and empty "dir/" keys confuse readers
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    folder, base = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    # Hidden name: a killed writer's leftover is skipped by readers of the folder (pyarrow datasets
    # and Ray Data ignore names starting with "." or "_"), never read as a second copy of the shard.
    tmp = f"{folder}/.{base}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
