"""Evaluation examples from dialogue shards (the filter job's `kept/`) or token shards.

A dialogue row gives one example per (user turn, next assistant turn) pair, exactly as stage 3
reads it (`training.data.sources.DialogueSource`): the model hears the user audio and must say
the reply. A token-shard row gives one TTS example (the model speaks the row's text).

Rows are picked by their `split` column (`train` | `valid` | `test`); `split="all"` takes every
row and is the only choice for shards written before the column existed.

    >>> examples = read_examples("out/filtered/kept", split="test", max_dialogues=50)
    >>> examples[0].reference_text, examples[0].kind
    ('It will be sunny and warm all day.', 'dialogue')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokenization.dialogue_schema import DIALOGUE, ID_COLUMN, TTS, file_row_kind
from training.data.sources import DialogueSource, Source, TokenShardSource
from training.data.row_groups import parquet_files, read_row_group

SPLITS = ("train", "valid", "test")
ALL = "all"


@dataclass
class EvalExample:
    id: str  # "<dialogue_id>/<turn>" for dialogues, the utt_id for TTS rows
    dialogue_id: str  # the row's id (utt_id for TTS rows)
    kind: str  # DIALOGUE | TTS (tokenization.dialogue_schema)
    language: str
    example: dict  # the Source's training example (what the stage's collator takes)

    @property
    def reference_text(self) -> str:
        return self.example["assistant_text"] if self.kind == DIALOGUE else self.example["text"]

    @property
    def user_audio(self) -> np.ndarray | None:
        """float32 [S] at 16 kHz (dialogues), None for TTS rows."""
        return self.example.get("user_audio")


def open_source(uri: str) -> tuple[Source, str]:
    """The shard folder's Source and row kind (`DIALOGUE` if rows hold `turns`, `TTS` if `codes`)."""
    files = parquet_files(uri)
    kind, names = file_row_kind(files[0])
    # split=None: every row group (read_examples picks rows itself and names the splits it saw)
    if kind == DIALOGUE:
        return DialogueSource(uri, with_codes=True, split=None), kind
    if kind == TTS:
        return TokenShardSource(uri, split=None), kind
    raise ValueError(f"{files[0]}: neither dialogue shards (`turns`) nor token shards (`codes`); columns {names}")


def read_examples(uri: str, split: str = "test", max_dialogues: int = 0) -> list[EvalExample]:
    """Examples of the rows whose `split` equals `split` (every row for "all"), in shard order.

    Args:
        uri: folder (local or s3://) of dialogue or token shards.
        split: train | valid | test | all.
        max_dialogues: stop after this many rows (0: no limit).
    Raises:
        ValueError: unknown split; a shard without a `split` column (unless split == "all");
            no row of that split.
    """
    if split != ALL and split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS + (ALL,))}, not {split!r}")
    source, kind = open_source(uri)
    id_col = ID_COLUMN[kind]
    out: list[EvalExample] = []
    n_rows, seen_splits = 0, set()
    for unit in source.units:  # every row group: the splits seen are named when none matches
        if split != ALL and not unit.has_split:
            raise ValueError(
                f"{unit.path}: no `split` column, so --split {split} cannot pick rows. "
                f"Rewrite the shards with a split column, or pass --split all to evaluate every row.")
        extra = ["language", "split"] if unit.has_split else ["language"]  # both shard schemas hold `language`
        for row in read_row_group(unit, source.columns + [c for c in extra if c not in source.columns], None).to_pylist():
            seen_splits.add(row.get("split"))
            if split != ALL and row["split"] != split:
                continue
            if max_dialogues and n_rows >= max_dialogues:
                return out
            n_rows += 1
            for ex in source.examples(row):
                out.append(EvalExample(ex["id"], row[id_col], kind, row.get("language") or "en", ex))
    if not out:
        what = "rows" if split == ALL else f"rows with split == {split!r} (splits present: {sorted(map(str, seen_splits))})"
        raise ValueError(f"{uri}: no {what} with a usable example")
    return out
