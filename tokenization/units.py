"""Units of work and the utterance records that input readers yield: the contract between a
corpus layout and the sharded-job engine.

The driver lists *units* -- a tar, a Parquet row group, a byte range of a big manifest, a
range of a cuts file -- never utterances. Inside a Ray task a reader turns one unit into
`Utterance` records (or `QuarantineRow`s naming the file/line and the reason). Output shards
derive from units, so resume and byte-identical reruns hold for every layout.

    units = list_units("s3://bucket/Emilia/EN/*.tar", "webdataset", ReaderOptions())   # driver
    for rec in read_unit(units[0], ReaderOptions()):                                    # task
        ...  # Utterance | QuarantineRow

This module holds the dataclasses and the registry; each layout's module in
`tokenization/readers/` registers its reader (`register_reader`) when that package is imported,
which the registry functions do on first use (so readers may import this module freely).
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np

from tokenization.errors import UserError
from tokenization.schema import QuarantineRow, sha1_hex, stable_json


@dataclass(frozen=True)
class Unit:
    """One piece of input the driver can list without reading it.

    `key` names the unit for good: a hash of its path under the input root plus its part/range
    (`unit_key`), so shard names survive files added or removed around it. `index` is its position in
    this listing, used only to order duplicate ids (the first in listing order wins). `size` and
    `version` (etag or mtime_ns) are its `fingerprint`: a rerun redoes the unit when they change.
    """

    uri: str  # local absolute path or s3:// URI of the file
    fmt: str  # reader name (see `register_reader`)
    index: int = 0
    part: int = 0  # row group (Parquet) or range number (manifests); 0 for whole files
    start: int = 0  # first byte (manifest ranges) or first row group
    stop: int = -1  # end (exclusive); -1: to the end of the file
    size: int = 0
    version: str = ""
    key: str = ""

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.version}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Unit":
        return cls(**d)

    @property
    def where(self) -> str:
        """A name for messages: the file, and the range when the unit is part of one."""
        return self.uri if self.start == 0 and self.stop == -1 else f"{self.uri}[{self.start}:{self.stop}]"


@dataclass
class AudioRef:
    """Where an utterance's audio is: a file (optionally a span of it), encoded bytes, or samples.

    Exactly one of `path`, `data`, `array` is set. A span (`start_s`, `duration_s`) applies to
    `path` and `data`: only that span is decoded (cuts into long recordings, segment manifests).
    """

    path: str = ""  # absolute path or s3:// URI
    data: bytes | None = None  # encoded audio (tar member, HF `audio.bytes`)
    array: np.ndarray | None = None  # decoded mono samples (HF `{array, sampling_rate}`)
    sample_rate: int = 0  # of `array`
    start_s: float = 0.0
    duration_s: float | None = None  # None: to the end

    @property
    def name(self) -> str:
        return self.path or "<embedded audio>"

    def to_dict(self) -> dict:
        """JSON-safe (bytes as base64, samples as float32 base64)."""
        d = {"path": self.path, "sample_rate": self.sample_rate, "start_s": self.start_s, "duration_s": self.duration_s}
        if self.data is not None:
            d["data"] = base64.b64encode(self.data).decode()
        if self.array is not None:
            d["array"] = base64.b64encode(np.asarray(self.array, np.float32).tobytes()).decode()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AudioRef":
        data = base64.b64decode(d["data"]) if d.get("data") is not None else None
        array = np.frombuffer(base64.b64decode(d["array"]), np.float32) if d.get("array") is not None else None
        return cls(d.get("path", ""), data, array, d.get("sample_rate", 0), d.get("start_s", 0.0), d.get("duration_s"))


@dataclass
class Utterance:
    """One utterance a reader found: what the token row needs besides the codes."""

    utt_id: str
    text: str
    audio: AudioRef
    speaker: str = ""
    source: str = ""
    language: str = "en"
    meta: dict | None = None  # the sample's other metadata keys (e.g. Emilia's `dnsmos`) -> `meta` column
    where: str = ""  # file:line, tar member or file#row, for messages

    def to_dict(self) -> dict:
        d = asdict(self)
        d["audio"] = self.audio.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Utterance":
        return cls(**{**d, "audio": AudioRef.from_dict(d["audio"])})


@dataclass
class ReaderOptions:
    """Reader settings from the CLI; one object so every reader takes the same arguments."""

    source: str = ""  # dataset name for rows that do not carry one
    audio_root: str = ""  # relative audio paths resolve here (default: the manifest's folder)
    audio_column: str = "audio"
    text_column: str = ""  # "" = auto-detect
    speaker_column: str = ""
    id_column: str = ""
    unit_bytes: int = 64 << 20  # manifests are cut into byte ranges of about this size
    allow_outside_paths: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def unit_key(uri: str, root: str, part: int = 0, start: int = 0, stop: int = -1) -> str:
    """16 hex digits naming a unit whatever else is in the listing: its path under `root`, part and range."""
    rel = "" if uri.rstrip("/") == root.rstrip("/") else uri[len(root.rstrip("/")) + 1:] if uri.startswith(root.rstrip("/") + "/") else uri
    return sha1_hex(stable_json([rel, part, start, stop]).encode())[:16]


def keyed(units: list[Unit], root: str) -> list[Unit]:
    """The units with their listing `index` and stable `key` (relative to the input root `root`)."""
    return [Unit(**{**u.to_dict(), "index": i, "key": unit_key(u.uri, root, u.part, u.start, u.stop)})
            for i, u in enumerate(units)]


Record = Utterance | QuarantineRow
Lister = Callable[[str, ReaderOptions], list[Unit]]
Reader = Callable[[Unit, ReaderOptions], Iterator[Record]]
_READERS: dict[str, tuple[Lister, Reader]] = {}


def register_reader(fmt: str, lister: Lister, reader: Reader) -> None:
    _READERS[fmt] = (lister, reader)


def _readers() -> dict[str, tuple[Lister, Reader]]:
    import tokenization.readers  # noqa: F401  (registers every layout; imported late: it imports us)

    return _READERS


def formats() -> tuple[str, ...]:
    return ("auto", *sorted(_readers()))


def list_units(uri: str, fmt: str, opts: ReaderOptions) -> list[Unit]:
    """Driver side: the units of an input, indexed in listing order. Reads listings and footers only.

    `fmt` "auto" picks the layout from the input's name, a folder's listing or a Parquet schema
    (`tokenization.readers.detect_format`).
    """
    readers = _readers()
    if fmt == "auto":
        from tokenization.readers import detect_format

        fmt = detect_format(uri)
    if fmt not in readers:
        raise UserError(f"--format {fmt}: expected one of {', '.join(formats())}")
    from tokenization.paths import input_root

    return keyed(readers[fmt][0](uri, opts), input_root(uri))


def read_unit(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    """Task side: every utterance (or quarantine row) of one unit, in a deterministic order."""
    return _readers()[unit.fmt][1](unit, opts)
