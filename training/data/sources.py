"""Stage sources: how the rows of each stage's shards become training examples.

Stage 1 reads token shards (`TokenShardSource`); stages 2 and 3 read dialogue shards
(`DialogueSource`: speech->text pairs, plus reply codes in stage 3). A Source reads one
split (`train` by default; `valid` for the validation loss) one row group at a time, only
the columns it needs. The sources of a mixture must agree (`check_sources`): one codec,
the stage's kind of shard.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Iterator

from tokenization import storage
from tokenization.audio import WHISPER_SAMPLE_RATE, decode_audio, resample
from tokenization.dialogue_schema import ASSISTANT, DIALOGUE, ID_COLUMN, TTS, USER, DialogueRow, DialogueTurn, file_row_kind
from tokenization.errors import UserError
from tokenization.schema import FRAME_RATE, TokenRow, read_file_metadata
from training.data.row_groups import TRAIN, RowGroup, list_row_groups, parquet_files, read_row_group
from training.data.selection import Selection, filter_columns, hours_cutoff, keep_mask, source_folders

SAMPLES_PER_FRAME = round(WHISPER_SAMPLE_RATE / FRAME_RATE)  # 1280: user audio samples per codec frame (80 ms)


class Source:
    """A data set of Parquet shards and how its rows become training examples.

    Subclasses name the columns they need and turn one Arrow row into zero or more
    examples (dicts the stage's collator takes), each with a bucketing `length`.
    """

    columns: list[str] | None = None
    id_column = ID_COLUMN[TTS]

    def __init__(self, uri: str, split: str | None = TRAIN, selection: Selection = Selection()):
        self.uri, self.split, self.selection = uri, split, selection  # split None: every row
        folders = source_folders(uri, selection.max_wer)  # with max_wer: the filter output's kept/ + rejects/
        self.units = [g for folder in folders for g in list_row_groups(folder, split)]
        # the nested subset by hours: train rows only, so only a train (or every-row) reader needs its cutoff
        self.cutoff = (hours_cutoff([g for f in folders for g in list_row_groups(f, TRAIN)], self.id_column, selection.hours)
                       if selection.hours and split in (TRAIN, None) else None)

    def read(self, group: RowGroup, rows: list[int] | None) -> list[dict]:
        """The rows of one row group (or the given ones) that belong to this source's split and selection."""
        return [row for _, row in self.read_indexed(group, rows)]

    def read_indexed(self, group: RowGroup, rows: list[int] | None) -> list[tuple[int, dict]]:
        """The rows of one row group (or the given ones) that belong to this source's split and are not excluded,
        each with its index in the row group (how a checkpoint names a row)."""
        index = list(range(group.num_rows)) if rows is None else list(rows)
        by_split = group.has_split and self.split is not None
        need = [*(["split"] if by_split else []),
                *filter_columns(self.selection.max_wer, self.cutoff, self.id_column, group.has_split, self.selection.exclude)]
        columns = None if self.columns is None else [*self.columns, *dict.fromkeys(c for c in need if c not in self.columns)]
        table = read_row_group(group, columns, rows)
        keep = keep_mask(table, self.selection.max_wer, self.cutoff, self.id_column, self.selection.exclude)
        if by_split:
            keep = [k and s == self.split for k, s in zip(keep, table.column("split").to_pylist())]
        return [(i, row) for i, row, k in zip(index, table.to_pylist(), keep) if k]

    def examples(self, row: dict) -> Iterator[dict]:
        raise NotImplementedError

    @staticmethod
    def length(example: dict) -> int:
        raise NotImplementedError


class TokenShardSource(Source):
    """Stage 1: token shards (or scored TTS shards, token rows with more columns) -> TTS examples."""

    # every column a token row must have (`split` is added per file; `meta` is absent from older shards)
    columns = [f.name for f in fields(TokenRow) if f.default is MISSING]

    def __init__(self, uri: str, max_frames: int = 0, split: str | None = TRAIN, selection: Selection = Selection()):
        super().__init__(uri, split, selection)
        self.max_frames = max_frames

    def examples(self, row: dict) -> Iterator[dict]:
        token = TokenRow.from_dict(row)  # the contract's row: codes [T, K] uint16
        if self.max_frames and len(token.codes) > self.max_frames:
            return
        yield {"id": token.utt_id, "text": token.text, "codes": token.codes, "n_frames": len(token.codes)}

    @staticmethod
    def length(example: dict) -> int:
        return example["n_frames"]


def speech_pair(user: DialogueTurn, reply: DialogueTurn, max_audio_s: float = 0.0) -> bool:
    """A user turn answered by an assistant turn, the user's speech within `max_audio_s` (0: any):
    the stage-2/3 example rule, shared by the stream and the dry run's count."""
    return (user.role == USER and reply.role == ASSISTANT
            and not (max_audio_s and (user.duration_s or 0) > max_audio_s))


class DialogueSource(Source):
    """Stages 2 and 3: dialogue shards -> one example per (user turn, next assistant turn).

    Stage 2 examples: `user_audio` (float32, 16 kHz) and `assistant_text`.
    Stage 3 examples: the same plus `assistant_codes` [T, K] (pairs whose assistant turn
    has no codes are skipped).
    """

    columns = [ID_COLUMN[DIALOGUE], "turns"]
    id_column = ID_COLUMN[DIALOGUE]

    def __init__(self, uri: str, with_codes: bool, max_audio_s: float = 0.0, max_frames: int = 0, split: str | None = TRAIN,
                 selection: Selection = Selection()):
        super().__init__(uri, split, selection)
        self.with_codes = with_codes
        self.max_audio_s = max_audio_s
        self.max_frames = max_frames

    def examples(self, row: dict) -> Iterator[dict]:
        dialogue = DialogueRow.from_dict({**row, "turns": row["turns"] or []})  # the contract's row: typed turns
        turns = dialogue.turns
        for i, (user, reply) in enumerate(zip(turns, turns[1:])):
            if not speech_pair(user, reply, self.max_audio_s) or not user.audio_flac:
                continue
            ex = {"id": f"{dialogue.dialogue_id}/{i}", "assistant_text": reply.text}
            if self.with_codes:
                if reply.codes is None:
                    continue
                ex["assistant_codes"] = reply.codes  # [T, K] uint16
                if self.max_frames and len(ex["assistant_codes"]) > self.max_frames:
                    continue
                ex["n_frames"] = len(ex["assistant_codes"])
            samples, rate = decode_audio(user.audio_flac, ex["id"])
            ex["user_audio"] = resample(samples, rate, WHISPER_SAMPLE_RATE)
            yield ex

    @staticmethod
    def length(example: dict) -> int:
        # audio in 80 ms steps (the codec frame rate) plus reply frames: similar lengths pad little
        return len(example["user_audio"]) // SAMPLES_PER_FRAME + example.get("n_frames", 0)


def make_source(stage: int, uri: str, max_frames: int = 0, max_audio_s: float = 0.0, split: str = TRAIN,
                selection: Selection = Selection()) -> Source:
    """The Source a stage reads: 1 -> token shards, 2 -> speech->text pairs, 3 -> dialogue pairs with codes;
    `selection` picks its rows (`training.data.selection`: WER threshold, nested subset by hours)."""
    if stage == 1:
        return TokenShardSource(uri, max_frames=max_frames, split=split, selection=selection)
    if stage in (2, 3):
        return DialogueSource(uri, with_codes=stage == 3, max_audio_s=max_audio_s, max_frames=max_frames, split=split,
                              selection=selection)
    raise ValueError(f"stage must be 1, 2 or 3, not {stage}")


# ---- a mixture's sources must agree -------------------------------------------------------
STAGE_KIND = {1: TTS, 2: DIALOGUE, 3: DIALOGUE}  # the shard kind each stage trains on
KIND_NAMES = {TTS: "token shards (the tokenize job's output)", DIALOGUE: "dialogue shards (the filter job's kept/)"}
CODEC_KEYS = ("codec_name", "codec_version", "n_codebooks", "codebook_size")  # file metadata a mixture must share


def shard_facts(uri: str) -> tuple[str | None, dict[str, str]]:
    """(row kind, codec facts from `CODEC_KEYS`) of a shard folder, from its first file's footer."""
    path = parquet_files(uri)[0]
    kind, _ = file_row_kind(path)
    with storage.open_input(path) as f:
        meta = read_file_metadata(f)
    return kind, {k: meta[k] for k in CODEC_KEYS if k in meta}


def check_sources(stage: int, sources: list[tuple[str, str]], facts: dict[str, tuple] | None = None) -> None:
    """Refuse sources one stage cannot train on together, before any worker starts.

    Args:
        stage: 1, 2 or 3 (which kind of shard it reads).
        sources: (name, path) of every source, in config order.
        facts: name -> `shard_facts` when already read (the dry run skips folders it cannot reach).
    Raises:
        UserError: one line naming the source(s) and what differs: a shard kind this stage does not
            read (a dialogue folder in stage 1), or a codec (name, version, codebook size or count)
            other than the first source's.
    """
    facts = facts if facts is not None else {name: shard_facts(path) for name, path in sources}
    paths = dict(sources)
    named = [n for n, _ in sources if n in facts]

    def who(n: str) -> str:
        return f"{n} ({paths[n]})"

    want = STAGE_KIND[stage]
    for n in named:
        kind = facts[n][0]
        if kind != want:
            good = next((m for m in named if facts[m][0] == want), None)
            holds = KIND_NAMES.get(kind, "no token or dialogue shards")
            beside = f", unlike {who(good)}" if good else ""
            raise UserError(f"data source {who(n)} holds {holds}{beside}: stage {stage} trains on {KIND_NAMES[want]}")
    for i, a in enumerate(named):
        for b in named[i + 1:]:
            for key in CODEC_KEYS:
                va, vb = facts[a][1].get(key), facts[b][1].get(key)
                if va is not None and vb is not None and va != vb:
                    raise UserError(f"data sources {who(a)} and {who(b)} were written by different codecs ({key} {va!r} vs "
                                    f"{vb!r}): a model learns one codec's tokens; tokenize both with the same codec")
