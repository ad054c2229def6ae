"""Units of work and the records that input readers yield: the contract between a corpus layout
and the sharded-job engine.

The driver lists *units* -- a tar, a Parquet row group, a byte range of a big manifest, a
range of a cuts file -- never utterances. Inside a Ray task a reader turns one unit into
`Utterance` records (or `QuarantineRow`s naming the file/line and the reason). Output shards
derive from units, so resume and byte-identical reruns hold for every layout.

    from tokenization.readers.registry import list_units, read_unit
    units = list_units("s3://bucket/Emilia/EN/*.tar", "webdataset", ReaderOptions())   # driver
    for rec in read_unit(units[0], ReaderOptions()):                                    # task
        ...  # Utterance | QuarantineRow

This module holds dataclasses only and imports no reader; the table of layouts and the functions
that dispatch through it are `tokenization/readers/registry.py`.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np

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
    fmt: str  # layout name (a key of `tokenization.readers.registry.READERS`)
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


USER, ASSISTANT = "user", "assistant"  # the roles of dialogue turns (and of `DialogueTurn.role` in the shards)


@dataclass
class TurnSpec:
    """One turn a dialogue reader found: role, text and where its audio is."""

    role: str
    text: str
    audio: AudioRef

    @property
    def audio_path(self) -> str:
        """The file the turn's audio is in ("" for embedded audio)."""
        return self.audio.path

    def to_dict(self) -> dict:
        return {"role": self.role, "text": self.text, "audio": self.audio.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "TurnSpec":
        audio = AudioRef.from_dict(d["audio"]) if "audio" in d else AudioRef(path=d["audio_path"])
        return cls(d["role"], d["text"], audio)


@dataclass
class DialogueSpec:
    """One dialogue a dialogue reader found (`--format dialogue`): what the filter's dialogue row needs."""

    dialogue_id: str
    source: str
    language: str
    speaker: str
    turns: list[TurnSpec] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-safe (embedded turn audio as base64)."""
        return {"dialogue_id": self.dialogue_id, "source": self.source, "language": self.language,
                "speaker": self.speaker, "turns": [t.to_dict() for t in self.turns]}

    @classmethod
    def from_dict(cls, d: dict) -> "DialogueSpec":
        return cls(d["dialogue_id"], d["source"], d["language"], d["speaker"], [TurnSpec.from_dict(t) for t in d["turns"]])


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


Record = Utterance | DialogueSpec | QuarantineRow  # a dialogue layout yields DialogueSpecs
Lister = Callable[[str, ReaderOptions], list[Unit]]
Reader = Callable[[Unit, ReaderOptions], Iterator[Record]]
