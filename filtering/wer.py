"""Word and character error rates with their edit counts (jiwer), on normalized text.

    >>> s = score("The quick brown fox.", " the quick brown box", "en")
    >>> (s.wer, s.n_sub, s.n_ref_words)
    (0.25, 1, 4)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jiwer

from filtering.normalize import normalize


@dataclass(frozen=True)
class Score:
    """One reference/hypothesis pair, scored. WER and CER are on normalized text."""

    text_ref_norm: str
    hyp_norm: str
    wer: float
    cer: float
    n_ref_words: int
    n_sub: int
    n_del: int
    n_ins: int

    def to_dict(self) -> dict:
        return asdict(self)


def score_normalized(ref: str, hyp: str) -> Score:
    """Score already-normalized strings.

    An empty reference cannot be divided by: WER/CER is 0 when the hypothesis is empty too
    and 1 otherwise (every hypothesis word is an insertion).
    """
    n_ref = len(ref.split())
    if n_ref == 0:
        n_ins = len(hyp.split())
        err = 0.0 if n_ins == 0 else 1.0
        return Score(ref, hyp, err, err, 0, 0, 0, n_ins)
    words = jiwer.process_words(ref, hyp)
    cer = jiwer.process_characters(ref, hyp).cer
    return Score(ref, hyp, float(words.wer), float(cer), n_ref, words.substitutions, words.deletions, words.insertions)


def score(text: str, hyp: str, language: str = "en") -> Score:
    """Normalize both sides for `language` (see `filtering.normalize`) and score."""
    return score_normalized(normalize(text, language), normalize(hyp, language))
