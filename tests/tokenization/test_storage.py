"""Storage faults at the call level: which errors are retried, which stop a job, and the retry count."""

from __future__ import annotations

import errno
import os

import pytest

from tokenization import storage

# Messages as pyarrow 26 words them for a moto server behind a proxy answering 503 SlowDown (tests/s3_server.py)
SLOW_DOWN_GET = "AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate. (Request ID: faults)"
SLOW_DOWN_HEAD = ("When getting information for key 'x/a.txt' in bucket 'bkt': AWS Error UNKNOWN (HTTP status 503) "
                  "during HeadObject operation: No response body.")
TIMEOUT = "AWS Error NETWORK_CONNECTION during UploadPart operation: curlCode: 28, Timeout was reached"
NO_BUCKET = "When initiating multiple part upload for key 'x' in bucket 'nobucket': AWS Error NO_SUCH_BUCKET during CreateMultipartUpload"
DENIED = "When reading information for key 'k' in bucket 'b': AWS Error ACCESS_DENIED during HeadObject operation: Access Denied"


def test_transient_and_permanent_errors_are_told_apart():
    for text in (SLOW_DOWN_GET, SLOW_DOWN_HEAD, TIMEOUT):
        assert storage.is_transient(OSError(text)) and storage.permanent_reason(OSError(text)) is None, text
    assert storage.is_transient(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
    assert storage.permanent_reason(OSError(NO_BUCKET)) == "no such bucket" and not storage.is_transient(OSError(NO_BUCKET))
    assert storage.permanent_reason(OSError(DENIED)) == "access denied"
    assert storage.permanent_reason(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == "no space left on device"
    assert storage.permanent_reason(PermissionError(errno.EACCES, os.strerror(errno.EACCES))) == "permission denied"
    assert not storage.is_transient(FileNotFoundError(errno.ENOENT, "Path does not exist 'b/k'"))  # callers decide


def test_retrying_counts_retries_and_stops_on_a_permanent_error(monkeypatch):
    monkeypatch.setenv(storage.BACKOFF_ENV, "0.001")
    monkeypatch.setenv(storage.RETRIES_ENV, "3")
    tries, before = [], storage.retries()

    def throttled_twice() -> str:
        tries.append(1)
        if len(tries) <= 2:
            raise OSError(SLOW_DOWN_GET)
        return "ok"

    assert storage.retrying(throttled_twice, "s3://b/k") == "ok" and storage.retries() - before == 2
    with pytest.raises(OSError, match="SLOW_DOWN"):  # still throttled after VOCALNET_STORAGE_RETRIES: the error
        storage.retrying(lambda: (_ for _ in ()).throw(OSError(SLOW_DOWN_GET)), "s3://b/k")
    assert storage.retries() - before == 2 + 3
    with pytest.raises(storage.StorageError, match=r"^s3://nobucket/x: no such bucket$"):
        storage.retrying(lambda: (_ for _ in ()).throw(OSError(NO_BUCKET)), "s3://nobucket/x")
    assert storage.retries() - before == 5  # a permanent error is not retried
    with pytest.raises(ValueError):  # not a storage error: passes through, once
        storage.retrying(lambda: int("x"), "s3://b/k")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the error cffi swallows, as expected
def test_a_read_error_inside_the_decoder_is_raised_not_decoded_as_the_end_of_the_file():
    """soundfile reads through cffi callbacks that swallow exceptions: a span decoded from a file whose ranged
    read is throttled halfway must raise that error (the job retries it), not return fewer samples."""
    import io

    import numpy as np
    import soundfile as sf

    from tokenization.audio import decode_span_of_file

    buf = io.BytesIO()
    sf.write(buf, np.sin(np.arange(48000) / 7.0).astype(np.float32), 16000, format="WAV")
    data = buf.getvalue()

    class Throttled(io.BytesIO):
        reads = 0

        def read(self, n=-1):
            Throttled.reads += 1
            if Throttled.reads == 3:
                raise OSError(SLOW_DOWN_GET)
            return super().read(n)

    whole, rate = decode_span_of_file(io.BytesIO(data), "clip.wav", 0.5, 2.0)
    assert rate == 16000 and len(whole) == 32000
    with pytest.raises(OSError, match="SLOW_DOWN") as info:
        decode_span_of_file(Throttled(data), "clip.wav", 0.5, 2.0)
    assert storage.is_transient(info.value)
