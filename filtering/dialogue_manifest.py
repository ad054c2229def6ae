"""Read dialogue manifests in two layouts into `DialogueSpec`s; malformed records become quarantine rows.

Native layout (JSONL, JSON list or Parquet), one dialogue per record:

    {"id": "d1", "source": "...", "language": "en", "speaker": "...",
     "turns": [{"role": "user", "text": "...", "audio_path": "wavs/d1_u.wav"},
               {"role": "assistant", "text": "...", "audio_path": "wavs/d1_a.wav"}]}

LLaMA-Omni / VocalNet layout (JSON list or JSONL), as speech-dialogue sets ship it:

    {"id": "d1", "speech": "wavs/d1_u.wav",          # user audio (a list for multi-turn)
     "conversations": [{"from": "human", "value": "<speech>\\nPlease answer ..."},
                       {"from": "gpt", "value": "answer text"}],
     "units": "...",                                # optional codec units: ignored here
     "tgt_speech": "wavs/d1_a.wav"}                # assistant audio (a list for multi-turn)

Assistant audio may also sit on the conversation entry itself (`"speech"`/`"audio"`/
`"audio_path"` keys). The `<speech>` placeholder is removed from user text (the user text
may then be empty: the audio carries it). Relative audio paths resolve against the
manifest's folder (local or `s3://`).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import pyarrow.parquet as pq

from tokenization.audio import read_bytes
from tokenization.schema import QuarantineRow
from tokenization.units import ReaderOptions, Unit

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "bot": "assistant"}
TGT_KEYS = ("tgt_speech", "answer_speech", "speech_response", "tgt_audio")
TURN_AUDIO_KEYS = ("audio_path", "audio", "speech", "wav")


@dataclass
class TurnSpec:
    role: str
    text: str
    audio_path: str


@dataclass
class DialogueSpec:
    dialogue_id: str
    source: str
    language: str
    speaker: str
    turns: list[TurnSpec] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DialogueSpec":
        return cls(d["dialogue_id"], d["source"], d["language"], d["speaker"], [TurnSpec(**t) for t in d["turns"]])


class BadRecord(ValueError):
    """A manifest record that cannot become a dialogue; the message is the quarantine reason."""


def _resolve(base: str, path: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise BadRecord("missing audio path")
    if "://" in path or path.startswith("/"):
        return path
    return f"{base.rstrip('/')}/{path}"


def _as_list(v) -> list:
    return [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


def _native(rec: dict, base: str) -> list[TurnSpec]:
    turns = rec.get("turns")
    if not isinstance(turns, list) or not turns:
        raise BadRecord("no turns")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise BadRecord(f"turn {i} is not an object")
        role = ROLES.get(str(t.get("role", "")).lower())
        if role is None:
            raise BadRecord(f"turn {i}: unknown role {t.get('role')!r}")
        text = t.get("text")
        if not isinstance(text, str):
            raise BadRecord(f"turn {i}: missing text")
        out.append(TurnSpec(role, text, _resolve(base, t.get("audio_path"))))
    return out


def _llama_omni(rec: dict, base: str) -> list[TurnSpec]:
    convs = rec.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise BadRecord("no conversations")
    user_audio = _as_list(rec.get("speech"))
    tgt_audio = next((_as_list(rec[k]) for k in TGT_KEYS if k in rec), [])
    out, n_user, n_asst = [], 0, 0
    for i, c in enumerate(convs):
        role = ROLES.get(str(c.get("from", "")).lower()) if isinstance(c, dict) else None
        if role is None:
            raise BadRecord(f"conversation {i}: unknown speaker {c.get('from') if isinstance(c, dict) else c!r}")
        text = c.get("value")
        if not isinstance(text, str):
            raise BadRecord(f"conversation {i}: missing value")
        audio = next((c[k] for k in TURN_AUDIO_KEYS if isinstance(c.get(k), str)), None)
        if role == "user":
            text = text.replace("<speech>", "").strip()
            audio = audio or (user_audio[n_user] if n_user < len(user_audio) else None)
            n_user += 1
        else:
            audio = audio or (tgt_audio[n_asst] if n_asst < len(tgt_audio) else None)
            n_asst += 1
        if audio is None:
            raise BadRecord(f"conversation {i} ({role}): no audio (assistant audio: one of {', '.join(TGT_KEYS)})")
        out.append(TurnSpec(role, text, _resolve(base, audio)))
    return out


def parse_record(rec, base: str, default_source: str) -> DialogueSpec:
    """One manifest record -> DialogueSpec. Raises BadRecord with the reason."""
    if not isinstance(rec, dict):
        raise BadRecord("record is not an object")
    did = rec.get("id", rec.get("dialogue_id"))
    if not isinstance(did, (str, int)) or str(did).strip() == "":
        raise BadRecord("missing id")
    turns = _llama_omni(rec, base) if "conversations" in rec else _native(rec, base)
    if not any(t.role == "assistant" for t in turns):
        raise BadRecord("no assistant turn")
    for i, t in enumerate(turns):
        if t.role == "assistant" and not t.text.strip():
            raise BadRecord(f"turn {i}: empty assistant text")
    return DialogueSpec(str(did), str(rec.get("source") or default_source), str(rec.get("language") or "en"),
                        str(rec.get("speaker") or ""), turns)


def _records(manifest: str) -> list[tuple[str, object]]:
    """(raw line for the quarantine table, parsed record or an exception) per record."""
    data = read_bytes(manifest)
    if manifest.endswith(".parquet"):
        return [(json.dumps(r, default=str)[:2000], r) for r in pq.read_table(io.BytesIO(data)).to_pylist()]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.lstrip().startswith("["):
        return [(json.dumps(r)[:2000], r) for r in json.loads(text)]
    out = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append((raw.decode("utf-8", "replace")[:2000], BadRecord("non-UTF-8 text")))
            continue
        try:
            out.append((line[:2000], json.loads(line)))
        except json.JSONDecodeError as exc:
            out.append((line[:2000], BadRecord(f"not JSON ({exc.msg})")))
    return out


def read_dialogues(manifest: str, source: str | None = None) -> tuple[list[DialogueSpec], list[QuarantineRow]]:
    """Parse a manifest (local or `s3://`; .jsonl, .json or .parquet).

    Returns:
        (dialogues in manifest order, quarantine rows for malformed records and duplicate ids).
    """
    base = manifest.rsplit("/", 1)[0] if "/" in manifest else "."
    default_source = source or manifest.rsplit("/", 1)[-1].split(".")[0]
    specs, bad, seen = [], [], set()
    for line, rec in _records(manifest):
        rid = str(rec.get("id", "")) if isinstance(rec, dict) else ""
        try:
            if isinstance(rec, Exception):
                raise rec
            spec = parse_record(rec, base, default_source)
            if spec.dialogue_id in seen:
                raise BadRecord("duplicate id")
        except BadRecord as exc:
            bad.append(QuarantineRow(rid, line, manifest, "manifest", str(exc)))
            continue
        seen.add(spec.dialogue_id)
        specs.append(spec)
    return specs, bad


# --- units (tokenization/units.py): the driver lists manifest files; tasks parse them ---------------


def list_dialogue_units(uri: str, opts: ReaderOptions) -> list[Unit]:
    """Driver side: one whole-file unit per dialogue manifest (range readers may cut big ones)."""
    from tokenization import storage

    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    return [Unit(uri=uri, fmt="dialogue", size=info.size or 0, version=str(info.mtime_ns or ""))]


def read_dialogue_unit(unit: Unit, opts: ReaderOptions):
    """Task side: `DialogueSpec`s and `QuarantineRow`s of one unit, in manifest order."""
    specs, bad = read_dialogues(unit.uri, opts.source or None)
    yield from bad
    yield from specs
