"""Local paths and `s3://` URIs through one API (pyarrow.fs).

S3 credentials and endpoint come from the usual environment variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL or
AWS_ENDPOINT_URL_S3); they are never logged.

Clouds fail (docs/faults.md). Two layers retry a transient error (503 SlowDown, a 5xx, a reset connection, a
timeout): the S3 client retries each request (`VOCALNET_S3_RETRIES`, exponential backoff from 25 ms), and
what outlasts it is retried here, a whole operation at a time (`retrying`: `VOCALNET_STORAGE_RETRIES` times,
backoff from `VOCALNET_STORAGE_BACKOFF_S`), counted per process (`retries()`) so a job can report them. A
permanent error (no space left, permission or access denied, no such bucket) raises `StorageError`: one line
naming the URI and the cause.
"""

from __future__ import annotations

import errno
import os
import random
import re
import threading
import time
from contextlib import contextmanager, suppress
from typing import Callable, Iterator, TypeVar

import pyarrow.fs as pafs

from tokenization.errors import UserError

T = TypeVar("T")

S3_RETRIES_ENV = "VOCALNET_S3_RETRIES"  # retries of one S3 request by the client (pyarrow's default strategy: 3)
S3_RETRIES = 10  # backoff 25 ms x 2^n: the 10th retry waits 12.8 s, about 25 s in all; throttling passes in seconds
RETRIES_ENV = "VOCALNET_STORAGE_RETRIES"  # retries of a whole operation (a read, a write, a unit) after the client's
RETRIES = 5
BACKOFF_ENV = "VOCALNET_STORAGE_BACKOFF_S"  # first wait of those retries; doubles each time (jittered), at most 60 s
BACKOFF_S = 2.0

# pyarrow raises OSError for every S3 failure; the AWS error name or HTTP status in its message says which kind.
_TRANSIENT = re.compile(r"SLOW_DOWN|SlowDown|THROTTL|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|REQUEST_TIMEOUT|"
                        r"NETWORK_CONNECTION|HTTP status 5\d\d|response code:? 5\d\d|connection reset|broken pipe|"
                        r"timed out|curlCode: (?:28|52|55|56)\b", re.IGNORECASE)
_S3_PERMANENT = (("ACCESS_DENIED", "access denied"), ("HTTP status 403", "access denied"),
                 ("NO_SUCH_BUCKET", "no such bucket"), ("INVALID_ACCESS_KEY_ID", "invalid access key"),
                 ("SIGNATURE_DOES_NOT_MATCH", "signature does not match (check the secret key)"))
_PERMANENT_ERRNO = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


class StorageError(UserError):
    """A storage call that will fail again however often it is retried (full disk, denied, no bucket): one line
    naming `uri` and `reason`; the job stops instead of retrying."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri, self.reason = uri, reason

    def __reduce__(self):  # rebuilt from its fields when Ray ships it back to the driver
        return StorageError, (self.uri, self.reason)


def is_transient(exc: BaseException) -> bool:
    """A storage failure that a later try can pass: throttling, a 5xx, a reset connection, a timeout."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and bool(_TRANSIENT.search(str(exc)))


def permanent_reason(exc: BaseException) -> str | None:
    """The cause of a storage failure that no retry fixes ("no space left on device", "access denied"), else None."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in _PERMANENT_ERRNO:
        return os.strerror(exc.errno).lower()
    text = str(exc)
    return next((reason for marker, reason in _S3_PERMANENT if marker in text), None)


_retries = 0
_retries_lock = threading.Lock()


def retries() -> int:
    """Operations this process retried after a transient error (`retrying`), since it started."""
    return _retries


def count_retry() -> None:
    global _retries
    with _retries_lock:
        _retries += 1


def _setting(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise UserError(f"{name}={raw!r}: not a number") from None


def backoff_s(retry: int) -> float:
    """Wait before retry `retry` (0-based) of an operation: `VOCALNET_STORAGE_BACKOFF_S` x 2^retry, jittered, <= 60 s."""
    return min(60.0, _setting(BACKOFF_ENV, BACKOFF_S) * 2 ** retry) * random.uniform(0.5, 1.0)


def retry_limit() -> int:
    """Retries of one operation after a transient error (`VOCALNET_STORAGE_RETRIES`)."""
    return int(_setting(RETRIES_ENV, RETRIES))


def retrying(fn: Callable[[], T], uri: str) -> T:
    """`fn()`, retried after a transient storage error (`VOCALNET_STORAGE_RETRIES` times, with backoff; each
    retry counted); a permanent one raises `StorageError` naming `uri`. Other errors pass through."""
    limit = retry_limit()
    for retry in range(limit + 1):
        try:
            return fn()
        except OSError as exc:
            reason = permanent_reason(exc)
            if reason:
                raise StorageError(uri, reason) from exc
            if retry == limit or not is_transient(exc):
                raise
        count_retry()
        time.sleep(backoff_s(retry))
    raise AssertionError("unreachable")


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
    # Throttling outlasts pyarrow's default of 3 tries; AWS's default strategy (no retry quota that a long
    # throttle drains) backs off exponentially. A pickled filesystem loses this setting (pyarrow keeps it out
    # of `__reduce__`): every process builds its own here.
    kwargs["retry_strategy"] = pafs.AwsDefaultS3RetryStrategy(max_attempts=int(_setting(S3_RETRIES_ENV, S3_RETRIES)))
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
    return retrying(lambda: fs.get_file_info(path).type != pafs.FileType.NotFound, uri)


def makedirs(uri: str) -> None:
    """Create a local folder; a no-op on S3 (keys need no parent)."""
    if uri.startswith("s3://"):
        return
    fs, path = filesystem(uri)
    retrying(lambda: fs.create_dir(path, recursive=True), uri)


def list_files(uri: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """Sorted full URIs of files directly under a folder, or anywhere below it with `recursive` (one paged
    listing on S3); an empty list if it does not exist."""
    fs, path = filesystem(uri)

    def listing() -> list:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return []
        return fs.get_file_info(pafs.FileSelector(path, recursive=recursive))

    infos = retrying(listing, uri)
    prefix = "s3://" if uri.startswith("s3://") else ""
    return sorted(prefix + i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


@contextmanager
def open_input(uri: str) -> Iterator:
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        yield f


def read_bytes(uri: str) -> bytes:
    """A whole file or object, the read retried as one operation (`retrying`)."""
    fs, path = filesystem(uri)

    def read() -> bytes:
        with fs.open_input_file(path) as f:
            return f.read()

    return retrying(read, uri)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def remove_if_exists(uri: str) -> None:
    """Delete one file or object; nothing there is fine."""
    fs, path = filesystem(uri)

    def delete() -> None:
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass

    retrying(delete, uri)


TEMP_RE = re.compile(r"^\..+\.tmp-\d+$")  # `write_bytes_atomic`'s temporary names


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write under a hidden temporary name, then rename: a killed writer never leaves a half file, and a failed
    write (a full disk) removes its temporary file. Raises `StorageError` on a permanent failure.

    On S3 a single PUT is already atomic, so the object is written directly.
    """
    fs, path = filesystem(uri)
    if uri.startswith("s3://"):  # no folder markers: S3 has no folders, and empty "dir/" keys confuse readers
        def put() -> None:
            with fs.open_output_stream(path) as f:
                f.write(data)

        retrying(put, uri)
        return
    folder, base = path.rsplit("/", 1)
    # Hidden name: a killed writer's leftover is skipped by readers of the folder (pyarrow datasets
    # and Ray Data ignore names starting with "." or "_"), never read as a second copy of the shard;
    # the next run sweeps it (`sweep_temp_files`).
    tmp = f"{folder}/.{base}.tmp-{os.getpid()}"

    def write() -> None:
        fs.create_dir(folder, recursive=True)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.remove(tmp)
            raise

    retrying(write, uri)


def sweep_temp_files(folder: str) -> int:
    """Delete the temporary files that killed writers left anywhere under a local folder (S3 has none: a PUT
    is atomic). Call before a run writes: a temporary name ends with its writer's process id, and a
    running writer's file must not be taken. Returns files deleted."""
    if folder.startswith("s3://") or not os.path.isdir(folder):
        return 0
    n = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if TEMP_RE.match(name):
                with suppress(FileNotFoundError):
                    os.remove(os.path.join(root, name))
                    n += 1
    return n
