"""`--format webdataset`: tars of `<key>.<ext>` members (Emilia: `<key>.mp3` + `<key>.json`).

One unit per tar. A task streams its tar (tarfile's `r|*` mode over a pyarrow input stream,
local or `s3://`; nothing is extracted to disk) and groups consecutive members by WebDataset
key: the member path up to the first dot of its file name. Per sample:

- audio: the first member with an extension in `AUDIO_EXTS` (bytes stay encoded until the load
  step), else a sidecar file named by the JSON's `audio_path`, resolved against the tar's folder
  under the same traversal rule as manifests;
- text: JSON `text`, else the `<key>.txt` member; stripped;
- `utt_id`: JSON `id`, else the key; `speaker`/`language` from the JSON;
- every other JSON key (Emilia's `dnsmos`, `duration`, `wav`) goes to `Utterance.meta`.

A truncated or corrupt tar keeps what was read before the break and adds ONE quarantine row
naming the tar and the byte offset (of the uncompressed stream) where it broke.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import zlib
from typing import Iterator

from tokenization import storage
from tokenization.paths import OutsidePath, folder_of, list_input_files, resolve_audio_path
from tokenization.readers.base import bad, line_of, meta_of, source_name
from tokenization.units import AudioRef, ReaderOptions, Record, Unit, Utterance

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
AUDIO_EXTS = ("mp3", "wav", "flac", "ogg", "opus")
COLUMN_KEYS = {"id", "text", "speaker", "language"}
BLOCK = tarfile.BLOCKSIZE
READ_BUFFER = 8 << 20


def split_key(name: str) -> tuple[str, str]:
    """`dir/EN_B0_W1.mp3` -> (`dir/EN_B0_W1`, `mp3`): the WebDataset key ends at the basename's first dot."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem) if folder else stem, ext.lower()


def list_tars(uri: str, opts: ReaderOptions) -> list[Unit]:
    """Driver side: one unit per tar of the listing (no tar is opened)."""
    return [Unit(uri=f.uri, fmt="webdataset", size=f.size, version=f.version) for f in list_input_files(uri, TAR_SUFFIXES)]


def _samples(tf: tarfile.TarFile, at: dict) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per run of consecutive members with one key, in tar order.

    `at` tracks the member being read (`offset`, `key`), so a break can be located.
    """
    key, members = None, {}
    for m in tf:
        at.update(offset=m.offset, key=m.name)
        if not m.isfile():
            continue
        k, ext = split_key(m.name)
        if k != key and key is not None:
            yield key, members
            members = {}
        key = k
        members.setdefault(ext, tf.extractfile(m).read())
    if key is not None:
        yield key, members


def _end_is_clean(tf: tarfile.TarFile) -> bool:
    """After iteration stopped without an error: did it stop at the end-of-archive marker?

    tarfile ends iteration silently on a truncated or invalid header past the first member, so
    a tar cut at a member boundary or with a garbled header would otherwise lose the rest
    without a word. A clean end consumed exactly one zero block and only zeros follow.
    """
    stream = tf.fileobj
    if stream.pos - tf.offset != BLOCK:
        return False
    while chunk := stream.read(1 << 16):
        if chunk.count(0) != len(chunk):
            return False
    return True


class _Sample:
    """Turns one key's members into an Utterance or a QuarantineRow."""

    def __init__(self, unit: Unit, opts: ReaderOptions):
        self.unit, self.opts = unit, opts
        self.source = source_name(unit.uri, opts)
        self.folder = folder_of(unit.uri)
        self.seen: set[str] = set()

    def record(self, key: str, members: dict[str, bytes]) -> Record:
        where = f"{self.unit.uri}:{key}"
        meta: dict = {}
        if "json" in members:
            try:
                meta = json.loads(members["json"].decode("utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                return bad(self.unit.uri, where, f"{key}.json is not a JSON object ({exc})", key)
        utt_id = str(meta.get("id") or key).strip()
        text = meta.get("text")
        if not isinstance(text, str) and "txt" in members:
            try:
                text = members["txt"].decode("utf-8")
            except UnicodeDecodeError:
                return bad(self.unit.uri, where, f"{key}.txt is not UTF-8", utt_id, line_of(meta))
        if not isinstance(text, str) or not text.strip():
            return bad(self.unit.uri, where, "no text (neither a JSON `text` nor a .txt member)", utt_id, line_of(meta))
        ext = next((e for e in members if e in AUDIO_EXTS), None)
        if ext is not None:
            audio = AudioRef(data=members[ext])
        elif isinstance(meta.get("audio_path"), str) and meta["audio_path"].strip():
            try:
                audio = AudioRef(path=resolve_audio_path(self.folder, meta["audio_path"].strip(), self.opts.audio_root,
                                                         self.opts.allow_outside_paths))
            except OutsidePath as exc:
                return bad(self.unit.uri, where, str(exc), utt_id, line_of(meta))
        else:
            return bad(self.unit.uri, where, f"no audio member ({'/'.join(AUDIO_EXTS)})", utt_id, line_of(meta))
        if utt_id in self.seen:
            return bad(self.unit.uri, where, f"duplicate id {utt_id!r} in this tar", utt_id, line_of(meta))
        self.seen.add(utt_id)
        return Utterance(utt_id=utt_id, text=text.strip(), audio=audio, speaker=str(meta.get("speaker") or ""),
                         source=self.source, language=str(meta.get("language") or "en"),
                         meta=meta_of(meta, COLUMN_KEYS), where=where)


def read_tar(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    """Task side: the samples of one tar in tar order, then at most one row for a broken tar."""
    sample = _Sample(unit, opts)
    fs, path = storage.filesystem(unit.uri)
    # a sequential stream with a big buffer: tarfile reads 10 KiB records, which on S3 would be one GET each;
    # compression=None: tarfile itself undoes gzip, so offsets in messages are those of the tar stream
    with fs.open_input_stream(path, compression=None, buffer_size=READ_BUFFER) as f:
        try:
            tf = tarfile.open(fileobj=f, mode="r|*")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if storage.is_transient(exc):  # throttled or reset, not a bad tar: the job reads the unit again
                raise
            yield bad(unit.uri, unit.uri, f"not a readable tar ({exc})")
            return
        at = {"offset": 0, "key": ""}  # the member being read: where a break is reported
        gz = " (of the uncompressed stream)" if unit.uri.lower().endswith(("gz", "tgz")) else ""
        try:
            for key, members in _samples(tf, at):
                yield sample.record(key, members)
            broke = None if _end_is_clean(tf) else (
                f"ends without the end-of-archive marker after byte {tf.offset}{gz} (truncated or corrupt header)")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if storage.is_transient(exc):
                raise
            broke = (f"truncated or corrupt at byte {at['offset']}{gz} (member {at['key']!r}: {exc or type(exc).__name__}); "
                     "the samples before it were kept")
        if broke:
            yield bad(unit.uri, unit.uri, broke)
