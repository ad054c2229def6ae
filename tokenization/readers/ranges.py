"""Byte-range units of line-oriented files (JSONL manifests, CSV, Lhotse cuts).

The driver cuts each file into ranges of about `--unit-bytes` from its size alone, never
reading a line. A range owns the lines that *start* inside it: a task seeks to `start - 1`,
skips to the end of that line, then reads lines while they start before `stop` (finishing the
last one past `stop`). So every line belongs to exactly one range, whatever the cut points.
Gzipped files cannot be entered mid-stream: one unit per file, read as a stream.

`json_lines` is the one JSON-lines reader (manifests, cuts, dialogue JSONL): a line that is not
UTF-8 or not JSON becomes a quarantine row there, worded the same for every layout.

Lines are located as `file:N` when the line number is known (a whole file or a gz stream)
and `file@byte N` inside a range (the number of earlier lines is not known without reading them).
"""

from __future__ import annotations

import gzip
import json
from typing import Iterator

from tokenization import storage
from tokenization.paths import InputFile, list_input_files
from tokenization.readers.base import bad
from tokenization.units import ReaderOptions, Unit

CHUNK = 1 << 20


def ranges_of(f: InputFile, fmt: str, opts: ReaderOptions) -> list[Unit]:
    """The byte-range units of one listed file (one whole-file unit when gzipped or small)."""
    step = max(int(opts.unit_bytes), 1)
    if f.uri.lower().endswith(".gz") or f.size <= step:
        return [Unit(uri=f.uri, fmt=fmt, size=f.size, version=f.version)]
    return [Unit(uri=f.uri, fmt=fmt, part=k, start=a, stop=min(a + step, f.size), size=f.size, version=f.version)
            for k, a in enumerate(range(0, f.size, step))]


def list_ranges(uri: str, fmt: str, opts: ReaderOptions, suffixes: tuple[str, ...]) -> list[Unit]:
    """Driver side: newline-agnostic byte ranges of every matching file (sizes from the listing only)."""
    return [u for f in list_input_files(uri, suffixes) for u in ranges_of(f, fmt, opts)]


def _range_bytes(f, start: int, stop: int) -> tuple[int, bytes]:
    """(offset of the first owned line, bytes from it through the end of the last line starting before stop)."""
    if start > 0:
        pos = start - 1
        f.seek(pos)
        while True:  # finish the line that started before this range: it is not ours
            chunk = f.read(CHUNK)
            if not chunk:
                return stop, b""
            nl = chunk.find(b"\n")
            if nl >= 0:
                start = pos + nl + 1
                break
            pos += len(chunk)
        f.seek(start)
    if start >= stop:
        return start, b""
    body = bytearray(f.read(stop - start))
    while body and not body.endswith(b"\n"):  # the last owned line runs past stop: read to its end
        chunk = f.read(CHUNK)
        if not chunk:
            break
        nl = chunk.find(b"\n")
        body += chunk if nl < 0 else chunk[: nl + 1]
        if nl >= 0:
            break
    return start, bytes(body)


def unit_lines(unit: Unit) -> Iterator[tuple[str, bytes]]:
    """(locator, raw line without its newline) for every non-blank line the unit owns, in file order."""
    if unit.uri.lower().endswith(".gz"):
        with storage.open_input(unit.uri) as f, gzip.open(f) as g:
            for no, raw in enumerate(g, start=1):
                if raw.strip():
                    yield f"{unit.uri}:{no}", raw.rstrip(b"\r\n")
        return
    whole = unit.start == 0 and unit.stop == -1
    with storage.open_input(unit.uri) as f:
        if whole:
            offset, data = 0, f.read()
        else:
            offset, data = _range_bytes(f, unit.start, unit.stop)
    for no, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            yield (f"{unit.uri}:{no}" if whole else f"{unit.uri}@byte {offset}"), raw.rstrip(b"\r")
        offset += len(raw) + 1


def first_line(uri: str) -> bytes:
    """The first line of a file (a CSV header, read by every range of the file)."""
    with storage.open_input(uri) as f:
        head = b""
        while b"\n" not in head:
            chunk = f.read(65536)
            if not chunk:
                break
            head += chunk
    return head.split(b"\n", 1)[0].rstrip(b"\r")


def decoded_lines(unit: Unit) -> Iterator[tuple[str, str | None, str]]:
    """(locator, line or None when not UTF-8, reason) for each line of a ranged unit."""
    for where, raw in unit_lines(unit):
        try:
            yield where, raw.decode("utf-8"), ""
        except UnicodeDecodeError as exc:
            yield where, None, f"line is not UTF-8 (non-UTF-8 text: {exc.reason} at byte {exc.start})"


def json_lines(unit: Unit) -> Iterator[tuple[str, str, object]]:
    """(locator, line, parsed JSON or a QuarantineRow for a non-UTF-8 / malformed line) per line of a unit."""
    for where, line, why in decoded_lines(unit):
        if line is None:
            yield where, "", bad(unit.uri, where, why)
            continue
        try:
            yield where, line, json.loads(line)
        except ValueError as exc:
            yield where, line, bad(unit.uri, where, f"malformed JSON line (not JSON: {exc})", line=line)
