"""The dialogue-shard row (one dialogue, its turns) and the scored TTS row with their Arrow schemas; shard kinds.

This is the shard contract's second half (the token row, quarantine row, layout names and file
metadata are in `tokenization/schema.py`), on the ground floor with it so that training reads
filter output without importing `filtering/`. It knows every row kind, so it also says what a
shard file holds (`row_kind`: `DIALOGUE` rows have `turns`, `TTS` rows have `codes`) and what
an output folder is (`detect_kind`: `TOKENIZE`, `FILTER_DIALOGUE` or `FILTER_TTS`).

Training reads stage 2 pairs as (user turn `audio_flac` -> next assistant turn `text`) and
stage 3 as (user audio -> assistant text + assistant `codes`). `OUT/kept/*.parquet` and
`OUT/rejects/*.parquet` share this schema. Codes are `list<fixed_size_list<uint16, K>>`
(time-major `[n_frames, K]`) exactly as in token shards (`tokenization/schema.py`).

    >>> table = dialogue_rows_to_table([row])      # row: DialogueRow
    >>> DialogueRow.from_dict(table.to_pylist()[0]).turns[1].codes.shape
    (25, 8)
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from tokenization import storage
from tokenization.errors import UserError
from tokenization.schema import (KEPT, N_CODEBOOKS, REJECTS, SHARDS, TokenRow, arrow_fields, arrow_schema, codes_to_numpy,
                                 codes_type, column)
from tokenization.units import ASSISTANT, USER  # noqa: F401  (DialogueTurn.role: the roles the dialogue reader yields)

DIALOGUE_SCHEMA_VERSION = "3"  # 2: `split` column (tokenization.splits); 3: quality columns (QualityScore)



@dataclass
class AsrScore:
    """The ASR columns of a scored item (a dialogue turn, a scored TTS row); null until it is scored.

    A base listed first (`class X(AsrScore, Content)`) so that these columns close the row.
    """

    asr_hyp: str | None = column(pa.string(), None)
    asr_model: str | None = column(pa.string(), None)
    text_ref_norm: str | None = column(pa.string(), None)
    wer: float | None = column(pa.float32(), None)
    cer: float | None = column(pa.float32(), None)
    n_ref_words: int | None = column(pa.int32(), None)
    n_sub: int | None = column(pa.int32(), None)
    n_del: int | None = column(pa.int32(), None)
    n_ins: int | None = column(pa.int32(), None)


@dataclass
class QualityScore:
    """The audio-quality columns of a scored item (`filtering.quality.QUALITY_COLUMNS`); null unless the run
    scored them (`--quality dnsmos,vad`). Listed before `AsrScore` in a class's bases, so they close the row.

    DNSMOS (Microsoft's P.835 sig/bak/ovrl and P.808 MOS, 1-5) as its reference computes it; Silero VAD's
    speech share of the clip and the silence before/after its speech (null when it finds no speech).
    """

    dnsmos_sig: float | None = column(pa.float32(), None)
    dnsmos_bak: float | None = column(pa.float32(), None)
    dnsmos_ovrl: float | None = column(pa.float32(), None)
    dnsmos_p808: float | None = column(pa.float32(), None)
    speech_ratio: float | None = column(pa.float32(), None)
    lead_silence_s: float | None = column(pa.float32(), None)
    trail_silence_s: float | None = column(pa.float32(), None)


@dataclass
class _TurnContent:
    """What a turn says: the columns before its ASR columns."""

    role: str = column(pa.string())  # USER | ASSISTANT
    text: str = column(pa.string())
    audio_flac: bytes = column(pa.binary())
    sample_rate: int = column(pa.int32())
    duration_s: float = column(pa.float32())
    codes: np.ndarray | None = column(codes_type, None)  # [T, K] uint16: assistant turns of kept rows; null otherwise
    n_frames: int = column(pa.int32(), 0)


@dataclass
class DialogueTurn(QualityScore, AsrScore, _TurnContent):
    """One turn of a dialogue row: `role` ... `n_frames`, then its ASR and quality columns (null when not scored)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["codes"] = None if self.codes is None else np.asarray(self.codes, np.uint16).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DialogueTurn":
        kw = {f.name: d.get(f.name) for f in fields(cls)}
        kw["codes"] = None if kw["codes"] is None else codes_to_numpy(kw["codes"])
        return cls(**kw)

    def audio(self) -> tuple[np.ndarray, int]:
        """Decoded float32 mono samples [S] and their rate."""
        return flac_to_pcm(self.audio_flac)


def turn_type(n_codebooks: int = N_CODEBOOKS) -> pa.DataType:
    return pa.struct(arrow_fields(DialogueTurn, n_codebooks))


@dataclass
class DialogueRow:
    """One dialogue of a dialogue shard (`OUT/kept/`, `OUT/rejects/`)."""

    dialogue_id: str = column(pa.string())
    source: str = column(pa.string())
    language: str = column(pa.string())
    speaker: str = column(pa.string())
    turns: list[DialogueTurn] = column(lambda k: pa.list_(turn_type(k)), default_factory=list)
    asr_model: str = column(pa.string(), "")
    wer: float | None = column(pa.float32(), None)  # worst scored turn
    cer: float | None = column(pa.float32(), None)  # worst scored turn
    n_ref_words: int = column(pa.int32(), 0)  # sums over scored turns
    n_sub: int = column(pa.int32(), 0)
    n_del: int = column(pa.int32(), 0)
    n_ins: int = column(pa.int32(), 0)
    keep: bool = column(pa.bool_(), False)
    reject_reason: str = column(pa.string(), "")  # "" when kept; "code: detail" otherwise (filtering.rules)
    audio_sha1: str = column(pa.string(), "")  # sha1 over the turns' decoded PCM
    run_id: str = column(pa.string(), "")
    split: str = column(pa.string(), "train")  # train | valid | test, by speaker (else dialogue id) hash

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "turns"}
        d["turns"] = [t.to_dict() for t in self.turns]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DialogueRow":
        kw = {f.name: d.get(f.name) for f in fields(cls)}
        kw["turns"] = [DialogueTurn.from_dict(t) for t in d["turns"]]
        return cls(**kw)

    def aggregate(self) -> None:
        """Fill the row-level ASR aggregates from the scored turns (worst WER/CER, summed counts)."""
        scored = [t for t in self.turns if t.wer is not None]
        self.asr_model = scored[0].asr_model if scored else ""
        self.wer = max((t.wer for t in scored), default=None)
        self.cer = max((t.cer for t in scored), default=None)
        for name in ("n_ref_words", "n_sub", "n_del", "n_ins"):
            setattr(self, name, int(sum(getattr(t, name) for t in scored)))


@dataclass
class ScoredTTSRow(QualityScore, AsrScore, TokenRow):
    """One utterance of a TTS-mode filter output (`OUT/kept/`, `OUT/rejects/`): its token row, scored (ASR, and
    quality with `--quality`) and judged.

        >>> ScoredTTSRow.from_dict(token_row_dict).keep     # not judged yet
        False
    """

    keep: bool = column(pa.bool_(), False)
    reject_reason: str = column(pa.string(), "")  # "" when kept; "code: detail" otherwise (filtering.rules)


def dialogue_schema(n_codebooks: int = N_CODEBOOKS) -> pa.Schema:
    return arrow_schema(DialogueRow, n_codebooks)


def scored_tts_schema(n_codebooks: int = N_CODEBOOKS) -> pa.Schema:
    """The token row's columns, then the ASR columns, the quality columns, `keep` and `reject_reason`."""
    return arrow_schema(ScoredTTSRow, n_codebooks)


def dialogue_rows_to_table(rows: list[DialogueRow | dict], n_codebooks: int = N_CODEBOOKS) -> pa.Table:
    dicts = [r.to_dict() if isinstance(r, DialogueRow) else r for r in rows]
    return pa.Table.from_pylist(dicts, schema=dialogue_schema(n_codebooks))


# ---- shard kinds ------------------------------------------------------------------------------
DIALOGUE, TTS = "dialogue", "tts"  # row kinds: a dialogue with `turns`; one utterance with `codes` (token or scored TTS)
TOKENIZE, FILTER_DIALOGUE, FILTER_TTS = "tokenize", "filter-dialogue", "filter-tts"  # output-folder kinds
ID_COLUMN = {DIALOGUE: "dialogue_id", TTS: "utt_id"}


def row_kind(columns: Sequence[str]) -> str | None:
    """DIALOGUE if the rows hold `turns`, TTS if they hold `codes` (token and scored TTS rows), else None."""
    return DIALOGUE if "turns" in columns else TTS if "codes" in columns else None


def file_row_kind(path: str) -> tuple[str | None, list[str]]:
    """(row kind, column names) of one Parquet shard, from its footer alone."""
    with storage.open_input(path) as f:
        names = pq.read_schema(f).names
    return row_kind(names), names


def is_tokenize_output(folder: str) -> bool:
    """True when `folder` is a tokenize job's output (it has `shards/`), e.g. the filter job's TTS-mode input."""
    return storage.exists(storage.join(folder, SHARDS))


def detect_kind(folder: str) -> str:
    """TOKENIZE | FILTER_DIALOGUE | FILTER_TTS, from the folder layout and the first file's columns.

    Raises:
        UserError: `folder` holds no tokenize or filter output (a wrong path the person can fix).
    """
    if storage.list_files(storage.join(folder, SHARDS), ".parquet"):
        return TOKENIZE
    files = storage.list_files(storage.join(folder, KEPT), ".parquet") + storage.list_files(storage.join(folder, REJECTS), ".parquet")
    if not files:
        raise UserError(f"{folder}: no {SHARDS}/, {KEPT}/ or {REJECTS}/ Parquet files: not a tokenize or filter output")
    return FILTER_DIALOGUE if file_row_kind(files[0])[0] == DIALOGUE else FILTER_TTS


def pcm_to_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float32 [S] -> 16-bit FLAC bytes (lossless for 16-bit sources)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def flac_to_pcm(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)
