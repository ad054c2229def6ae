"""Normalization and WER/CER scoring."""

import pytest

from filtering.normalize import normalize
from filtering.wer import score


@pytest.mark.parametrize(
    "a, b",
    [
        ("The house is about one hundred years old.", "The house is about 100 years old."),  # numbers
        ("The store opens at eight o'clock.", "the store opens at 8 o'clock"),  # numbers, casing, punctuation
        ("Twenty-five dollars!", "$25"),  # currency
        ("I can't go, it's late.", "I can not go it is late"),  # contractions
        ("WHERE is the nearest library?!", "where is the nearest library"),  # casing, punctuation
        ("The colour is grey.", "The color is gray"),  # British spelling
        ("Mr. Smith", "mister smith"),
    ],
)
def test_english_normalizer_makes_equivalent_texts_equal(a, b):
    assert normalize(a, "en") == normalize(b, "en")
    assert score(a, b, "en").wer == 0.0


def test_other_languages_use_the_basic_normalizer():
    # Basic normalizer: casing and punctuation only, numbers stay as written.
    assert normalize("Ça va, Monsieur ?", "fr") == "ça va monsieur"
    assert normalize("Zwanzig Euro!", "de") != normalize("20 Euro", "de")
    assert normalize("one hundred", "en-US") == "100"


def test_counts_and_rates():
    s = score("the quick brown fox jumps", "the quick brown box jumps high", "en")
    assert (s.n_ref_words, s.n_sub, s.n_del, s.n_ins) == (5, 1, 0, 1)
    assert s.wer == pytest.approx(2 / 5)
    assert 0 < s.cer < s.wer
    d = score("the library is next to the post office", "the library is next", "en")
    assert (d.n_del, d.n_sub, d.n_ins) == (4, 0, 0) and d.wer == 0.5


def test_empty_sides():
    assert score("", "", "en").wer == 0.0
    assert score("", "hello", "en").wer == 1.0 and score("", "hello", "en").n_ins == 1
    e = score("hello there", "", "en")
    assert e.wer == 1.0 and e.n_del == 2
    assert score("hello there", ".", "en").wer == 1.0  # punctuation-only hypothesis is empty after normalization
