"""Audio I/O: soundfile for decoding (WAV, FLAC, OGG, MP3), mono mixdown, soxr resampling.

`load_audio` raises `BadAudio` with a reason a person can act on; callers turn it into
a quarantine row instead of stopping the job.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

WHISPER_SAMPLE_RATE = 16000  # Hz: what Whisper (the ASR filter, the model's audio encoder) hears; user audio is resampled to it
SILENCE_PEAK = 1e-4  # below this peak amplitude a clip counts as all-silence
MIN_SECONDS = 0.1  # shorter clips are truncated or empty, not speech


class BadAudio(ValueError):
    """Audio that cannot become training data; the message is the quarantine reason."""


def read_bytes(path: str) -> bytes:
    """Read a local path or an `s3://...` URI (pyarrow.fs, credentials from the environment)."""
    if "://" in path:
        from tokenization.storage import open_input

        with open_input(path) as f:  # one try: the engine retries a throttled load whole (`storage.retrying`)
            return f.read()
    return Path(path).read_bytes()


def _unreadable(path: str, exc: OSError) -> BadAudio:
    """A read error as a quarantine reason; a transient storage error (throttling, a reset) is raised again
    instead: the job retries it, since a row quarantined for it would differ from a clean run's."""
    from tokenization.storage import is_transient

    if is_transient(exc):
        raise exc
    return BadAudio(f"{path}: cannot read ({exc})")


def _mono(samples: np.ndarray) -> np.ndarray:
    """[n, channels] -> [n]; a mono file's one column as is (the same values a mean gives, without its cost)."""
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)


def decode_audio(data: bytes, source: str) -> tuple[np.ndarray, int]:
    """Decode bytes to mono float32 samples and their sample rate."""
    if len(data) == 0:
        raise BadAudio(f"{source}: zero-byte file")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        detail = getattr(exc, "error_string", None) or re.sub(r"<[^>]* at 0x[0-9a-f]+>", "<data>", str(exc))
        raise BadAudio(f"{source}: not readable as audio ({detail})") from None  # no addresses: reasons are reproducible
    return _mono(samples), int(rate)


def validate(samples: np.ndarray, rate: int, source: str, max_seconds: float | None = None) -> None:
    """Reject audio that would corrupt training: non-finite, too short, silent, over-long."""
    if not np.all(np.isfinite(samples)):
        raise BadAudio(f"{source}: NaN or inf samples")
    seconds = len(samples) / rate
    if seconds < MIN_SECONDS:
        raise BadAudio(f"{source}: too short or truncated ({seconds:.3f} s < {MIN_SECONDS} s)")
    if max_seconds is not None and seconds > max_seconds:
        raise BadAudio(f"{source}: over --max-duration ({seconds:.1f} s > {max_seconds:g} s)")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise BadAudio(f"{source}: all silence (peak < {SILENCE_PEAK:g})")


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return soxr.resample(samples, rate, target_rate, quality="HQ").astype(np.float32)


def read_validated(path: str, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read, decode and validate one file; mono float32 samples at the file's own rate.

    Raises:
        BadAudio: missing, empty, unreadable, non-finite, too short, silent or over-long audio.
    """
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        raise BadAudio(f"{path}: file not found") from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    samples, rate = decode_audio(data, path)
    validate(samples, rate, path, max_seconds)
    return samples, rate


def load_audio(path: str, target_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """`read_validated`, then resample to mono float32 at `target_rate`."""
    samples, rate = read_validated(path, max_seconds)
    return resample(samples, rate, target_rate)


SPAN_SLACK_S = 0.02  # a cut may end this far past the recording (rounding of start/duration in manifests)


def _decode_span(f, source: str, start_s: float, duration_s: float | None) -> tuple[np.ndarray, int]:
    """Seek to the span and decode only it (mono float32); `f` is a path or a seekable file object."""
    try:
        snd = sf.SoundFile(f)
    except Exception as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
        raise BadAudio(f"{source}: not readable as audio ({detail})") from None
    with snd:
        rate, total = int(snd.samplerate), int(snd.frames)
        first = int(round(start_s * rate))
        n = total - first if duration_s is None else int(round(duration_s * rate))
        if start_s < 0 or n <= 0:
            raise BadAudio(f"{source}: empty or negative span (start {start_s:g} s, duration {duration_s} s)")
        if first + n > total + SPAN_SLACK_S * rate:
            end = start_s + n / rate
            raise BadAudio(f"{source}: span {start_s:.3f}-{end:.3f} s is past the end of the recording ({total / rate:.3f} s)")
        snd.seek(first)
        samples = snd.read(min(n, total - first), dtype="float32", always_2d=True)
    return _mono(samples), rate


class _ReadErrors:
    """A file object for soundfile that keeps its first read or seek error: soundfile reads through cffi
    callbacks, which swallow exceptions, so a throttled ranged GET would decode as the end of the file."""

    def __init__(self, f):
        self.f, self.error = f, None

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def read(self, n: int = -1) -> bytes:
        return self._call(self.f.read, n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call(self.f.seek, offset, whence)

    def tell(self) -> int:
        return self.f.tell()


def decode_span_of_file(f, source: str, start_s: float, duration_s: float | None) -> tuple[np.ndarray, int]:
    """`_decode_span` of an open file object, raising the first error reading it hit (OSError) instead of what
    the decoder made of it (a short read, "not readable"): the caller retries a transient one."""
    checked = _ReadErrors(f)
    try:
        out = _decode_span(checked, source, start_s, duration_s)
    except BadAudio:
        if checked.error is not None:
            raise checked.error from None
        raise
    if checked.error is not None:
        raise checked.error
    return out


def read_span(ref) -> tuple[np.ndarray, int]:
    """Decode only `ref`'s span (`start_s`, `duration_s`) of a file or of embedded bytes: a seek, not a
    whole-file decode, so a cut into a 10-hour recording reads seconds. Raises BadAudio."""
    if ref.data is not None:
        return _decode_span(io.BytesIO(ref.data), ref.name, ref.start_s, ref.duration_s)
    if "://" not in ref.path:
        if not Path(ref.path).is_file():
            raise BadAudio(f"{ref.path}: file not found")
        return _decode_span(ref.path, ref.path, ref.start_s, ref.duration_s)
    from tokenization.storage import open_input

    try:
        with open_input(ref.path) as f:  # pyarrow random-access file: soundfile seeks in it (ranged GETs on S3)
            return decode_span_of_file(f, ref.path, ref.start_s, ref.duration_s)
    except FileNotFoundError:
        raise BadAudio(f"{ref.path}: file not found") from None
    except OSError as exc:
        raise _unreadable(ref.path, exc) from None


def read_ref(ref, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read, decode and validate the audio an `tokenization.units.AudioRef` points at.

    A span (`start_s` > 0 or `duration_s` set) decodes only that span (`read_span`).

    Raises:
        BadAudio: as `read_validated`, naming the file (or `<embedded audio>`); a span past the end.
    """
    if ref.array is not None:
        samples, rate = np.asarray(ref.array, np.float32).reshape(-1), int(ref.sample_rate)
    elif ref.start_s or ref.duration_s is not None:
        samples, rate = read_span(ref)
    elif ref.data is not None:
        samples, rate = decode_audio(ref.data, ref.name)
    else:
        return read_validated(ref.path, max_seconds)
    validate(samples, rate, ref.name, max_seconds)
    return samples, rate
