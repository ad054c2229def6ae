"""Read dialogue manifests in four layouts into `DialogueSpec`s; malformed records become quarantine rows.

Native layout (JSONL, JSON list or Parquet), one dialogue per record; a turn's audio is a path
(`audio_path` or `audio`) or an HF audio struct (`{bytes, path}` / `{array, sampling_rate}`):

    {"id": "d1", "source": "...", "language": "en", "speaker": "...",
     "turns": [{"role": "user", "text": "...", "audio_path": "wavs/d1_u.wav"},
               {"role": "assistant", "text": "...", "audio_path": "wavs/d1_a.wav"}]}

LLaMA-Omni / VocalNet layout (JSON list or JSONL), as speech-dialogue sets ship it:

    {"id": "d1", "speech": "wavs/d1_u.wav",          # user audio (a list for multi-turn)
     "conversations": [{"from": "human", "value": "<speech>\\nPlease answer ..."},
                       {"from": "gpt", "value": "answer text"}],
     "units": "...",                                # optional codec units: ignored here
     "tgt_speech": "wavs/d1_a.wav"}                # assistant audio (a list for multi-turn)

InstructS2S layout: `{"id", "conversation": [{"from", "text", "speech", "unit"}, ...]}`.

HF dialogue Parquet with one column per side (VoiceAssistant-400K: `question`, `question_audio`,
`answer`, `answer_snac`; others: `answer_audio`); without an id column the id is
`split_name-index-round` (those present) or a stable hash of the file name and row.

Assistant speech that exists only as codec units (`units`, `unit`, `answer_snac`) has no audio
to transcribe: the dialogue is quarantined with that reason, never kept. The `<speech>`
placeholder is removed from user text (the user text may then be empty: the audio carries it).
Relative audio paths resolve against the manifest's folder (or `--audio-root`, local or
`s3://`) and may not leave it unless `--allow-outside-paths`.

Units: a JSONL file is cut into byte ranges, a `.json` file is one unit, a Parquet file one unit
per row group; the driver reads listings and footers only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

from tokenization.dialogue_schema import ASSISTANT, USER
from tokenization.manifest import stable_utt_id
from tokenization.paths import folder_of, input_root, list_input_files
from tokenization.readers.base import bad, line_of
from tokenization.readers.hf import audio_ref, read_row_group, row_groups_of
from tokenization.readers.manifests import decoded_lines
from tokenization.readers.ranges import ranges_of
from tokenization.schema import QuarantineRow
from tokenization.storage import open_input
from tokenization.units import AudioRef, ReaderOptions, Unit, keyed

ROLES = {"user": USER, "human": USER, "assistant": ASSISTANT, "gpt": ASSISTANT, "bot": ASSISTANT}  # input spelling -> role
TGT_KEYS = ("tgt_speech", "answer_speech", "speech_response", "tgt_audio")
TURN_AUDIO_KEYS = ("audio_path", "audio", "speech", "wav")
UNIT_KEYS = ("units", "unit", "tgt_units", "answer_snac", "answer_units")  # codec tokens, not audio
ID_KEYS = ("id", "dialogue_id")
HF_ID_KEYS = ("utt_id", "key")  # Parquet rows only (besides ID_KEYS)
HF_POSITION_KEYS = ("split_name", "index", "round")  # VoiceAssistant-400K has no id column
SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz")
FMT = "dialogue"


@dataclass
class TurnSpec:
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


class BadRecord(ValueError):
    """A manifest record that cannot become a dialogue; the message is the quarantine reason."""


@dataclass
class _Where:
    """What relative paths resolve against, and the reader options that govern it."""

    base: str
    opts: ReaderOptions = field(default_factory=ReaderOptions)

    def ref(self, value) -> AudioRef:
        """A path or HF audio struct -> AudioRef (raises BadRecord)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadRecord("missing audio path")
        try:
            return audio_ref(value, self.base, self.opts)
        except ValueError as exc:  # OutsidePath is one: the reason names the path and the flag
            raise BadRecord(str(exc)) from None


def _as_list(v) -> list:
    return [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


def _units_only(where: str, keys) -> BadRecord:
    return BadRecord(f"{where}: assistant speech exists only as codec units ({', '.join(keys)}): no audio to transcribe")


def _native(rec: dict, at: _Where) -> list[TurnSpec]:
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
        audio = next((t[k] for k in ("audio_path", "audio") if t.get(k) is not None), None)
        units = [k for k in UNIT_KEYS if t.get(k) is not None]
        if audio is None and role == ASSISTANT and units:
            raise _units_only(f"turn {i}", units)
        out.append(TurnSpec(role, text, at.ref(audio)))
    return out


def _conversation(rec: dict, key: str) -> Iterator[tuple[int, str, dict]]:
    """(index, role, entry) of a `from`-keyed conversation list (LLaMA-Omni, InstructS2S)."""
    convs = rec.get(key)
    if not isinstance(convs, list) or not convs:
        raise BadRecord(f"no {key}")
    for i, c in enumerate(convs):
        role = ROLES.get(str(c.get("from", "")).lower()) if isinstance(c, dict) else None
        if role is None:
            raise BadRecord(f"conversation {i}: unknown speaker {c.get('from') if isinstance(c, dict) else c!r}")
        yield i, role, c


def _llama_omni(rec: dict, at: _Where) -> list[TurnSpec]:
    user_audio = _as_list(rec.get("speech"))
    tgt_audio = next((_as_list(rec[k]) for k in TGT_KEYS if k in rec), [])
    out, n_user, n_asst = [], 0, 0
    for i, role, c in _conversation(rec, "conversations"):
        text = c.get("value")
        if not isinstance(text, str):
            raise BadRecord(f"conversation {i}: missing value")
        audio = next((c[k] for k in TURN_AUDIO_KEYS if isinstance(c.get(k), (str, dict))), None)
        if role == USER:
            text = text.replace("<speech>", "").strip()
            audio = audio or (user_audio[n_user] if n_user < len(user_audio) else None)
            n_user += 1
        else:
            audio = audio or (tgt_audio[n_asst] if n_asst < len(tgt_audio) else None)
            n_asst += 1
        if audio is None:
            units = [k for k in UNIT_KEYS if rec.get(k) is not None or c.get(k) is not None]
            if role == ASSISTANT and units:
                raise _units_only(f"conversation {i}", units)
            raise BadRecord(f"conversation {i} ({role}): no audio (assistant audio: one of {', '.join(TGT_KEYS)})")
        out.append(TurnSpec(role, text, at.ref(audio)))
    return out


def _instruct_s2s(rec: dict, at: _Where) -> list[TurnSpec]:
    """InstructS2S: `conversation` of `{from, text, speech, unit}`."""
    out = []
    for i, role, c in _conversation(rec, "conversation"):
        text = c.get("text", c.get("value"))
        if not isinstance(text, str):
            raise BadRecord(f"conversation {i}: missing text")
        audio = c.get("speech") if c.get("speech") not in (None, "") else c.get("audio")
        if audio is None and role == ASSISTANT and c.get("unit") is not None:
            raise _units_only(f"conversation {i}", ["unit"])
        if audio is None:
            raise BadRecord(f"conversation {i} ({role}): no audio (`speech`)")
        out.append(TurnSpec(role, text.replace("<speech>", "").strip() if role == USER else text, at.ref(audio)))
    return out


def _question_answer(rec: dict, at: _Where) -> list[TurnSpec]:
    """HF columns: `question` + `question_audio` (user), `answer` + `answer_audio` (assistant)."""
    question, answer = rec.get("question"), rec.get("answer")
    if not isinstance(answer, str):
        raise BadRecord("missing answer text")
    if rec.get("answer_audio") is None:
        units = [k for k in UNIT_KEYS if rec.get(k) is not None]
        if units:
            raise _units_only("answer", units)
        raise BadRecord("answer: no audio (answer_audio)")
    return [TurnSpec(USER, question if isinstance(question, str) else "", at.ref(rec.get("question_audio"))),
            TurnSpec(ASSISTANT, answer, at.ref(rec["answer_audio"]))]


def parse_record(rec, base: str, default_source: str, opts: ReaderOptions | None = None) -> DialogueSpec:
    """One manifest record -> DialogueSpec. Raises BadRecord with the reason."""
    if not isinstance(rec, dict):
        raise BadRecord("record is not an object")
    did = next((rec[k] for k in ID_KEYS if k in rec), None)
    if not isinstance(did, (str, int)) or str(did).strip() == "":
        raise BadRecord("missing id")
    at = _Where(base, opts or ReaderOptions())
    if "conversations" in rec:
        turns = _llama_omni(rec, at)
    elif "conversation" in rec:
        turns = _instruct_s2s(rec, at)
    elif "question_audio" in rec:
        turns = _question_answer(rec, at)
    else:
        turns = _native(rec, at)
    if not any(t.role == ASSISTANT for t in turns):
        raise BadRecord("no assistant turn")
    for i, t in enumerate(turns):
        if t.role == ASSISTANT and not t.text.strip():
            raise BadRecord(f"turn {i}: empty assistant text")
    return DialogueSpec(str(did).strip(), str(rec.get("source") or default_source), str(rec.get("language") or "en"),
                        str(rec.get("speaker") or ""), turns)


# --- units: the driver lists files (and Parquet footers); tasks parse records ---------------------


def list_dialogue_units(uri: str, opts: ReaderOptions) -> list[Unit]:
    """Driver side: JSONL byte ranges, one unit per `.json` file, one per Parquet row group; keyed (shard names)."""
    units = []
    for f in list_input_files(uri, SUFFIXES):
        lower = f.uri.lower()
        if lower.endswith(".parquet"):
            units += row_groups_of(f, opts, FMT)
        elif lower.endswith(".json"):
            units.append(Unit(uri=f.uri, fmt=FMT, size=f.size, version=f.version))
        else:
            units += ranges_of(f, FMT, opts)
    return keyed(units, input_root(uri))


def _json_records(unit: Unit) -> Iterator[tuple[str, str, object]]:
    """A `.json` unit: a JSON list (or one object); JSONL content in a `.json` file reads as lines."""
    with open_input(unit.uri) as f:
        data = f.read()
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        yield unit.uri, "", BadRecord("non-UTF-8 text")
        return
    except json.JSONDecodeError as exc:
        first = next((x for x in data.splitlines() if x.strip()), b"")
        try:
            json.loads(first)
        except ValueError:  # not JSONL either: one row for the file, not one per line of a broken document
            yield unit.uri, "", BadRecord(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
            return
        yield from _line_records(unit)
        return
    for i, rec in enumerate(doc if isinstance(doc, list) else [doc]):
        yield f"{unit.uri}[{i}]", json.dumps(rec)[:2000], rec


def _line_records(unit: Unit) -> Iterator[tuple[str, str, object]]:
    for where, line, _ in decoded_lines(unit):
        if line is None:
            yield where, "", BadRecord("non-UTF-8 text")
            continue
        try:
            yield where, line[:2000], json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, line[:2000], BadRecord(f"not JSON ({exc.msg})")


def _parquet_records(unit: Unit) -> Iterator[tuple[str, str, object]]:
    rows, first = read_row_group(unit)
    name = unit.uri.rsplit("/", 1)[-1]
    for i, row in enumerate(rows):
        if not any(row.get(k) not in (None, "") for k in ID_KEYS):
            key = next((k for k in HF_ID_KEYS if row.get(k) not in (None, "")), None)
            parts = [str(row[k]) for k in HF_POSITION_KEYS if row.get(k) is not None]
            row = {**row, "id": str(row[key]) if key else "-".join(parts) or stable_utt_id(name, name, f"row{first + i}")}
        yield f"{unit.uri}#row{first + i}", line_of(row), row


def _unit_records(unit: Unit) -> Iterator[tuple[str, str, object]]:
    lower = unit.uri.lower()
    if lower.endswith(".parquet"):
        return _parquet_records(unit)
    if lower.endswith(".json"):
        return _json_records(unit)
    return _line_records(unit)


def read_dialogue_unit(unit: Unit, opts: ReaderOptions) -> Iterator[DialogueSpec | QuarantineRow]:
    """Task side: `DialogueSpec`s and `QuarantineRow`s of one unit, in manifest order."""
    base = folder_of(unit.uri)
    default_source = opts.source or unit.uri.rsplit("/", 1)[-1].split(".")[0]
    seen: set[str] = set()
    for where, line, rec in _unit_records(unit):
        rid = str(next((rec[k] for k in ID_KEYS if k in rec), "")) if isinstance(rec, dict) else ""
        try:
            if isinstance(rec, Exception):
                raise rec
            spec = parse_record(rec, base, default_source, opts)
            if spec.dialogue_id in seen:
                raise BadRecord("duplicate id")
        except BadRecord as exc:
            yield bad(unit.uri, where, str(exc), rid, line)
            continue
        seen.add(spec.dialogue_id)
        yield spec


def read_dialogues(manifest: str, source: str | None = None,
                   opts: ReaderOptions | None = None) -> tuple[list[DialogueSpec], list[QuarantineRow]]:
    """Every unit of a manifest (file, folder or glob; local or `s3://`) in order, on one machine.

    Returns:
        (dialogues in manifest order, quarantine rows for malformed records and duplicate ids).
    """
    opts = opts or ReaderOptions(source=source or "")
    specs, quarantined, seen = [], [], set()
    for unit in list_dialogue_units(manifest, opts):
        for rec in read_dialogue_unit(unit, opts):
            if isinstance(rec, QuarantineRow):
                quarantined.append(rec)
            elif rec.dialogue_id in seen:  # across units (within one, the unit reader catches it)
                quarantined.append(bad(unit.uri, unit.where, "duplicate id", rec.dialogue_id))
            else:
                seen.add(rec.dialogue_id)
                specs.append(rec)
    return specs, quarantined
