"""Text normalization before scoring: Whisper's own normalizers, chosen by language.

English uses `EnglishTextNormalizer` (numbers to digits, British to American spelling,
contractions expanded, punctuation and casing removed), so "Twenty-five dollars!" and
"$25" score as the same word. Other languages use `BasicTextNormalizer` (casing,
punctuation, diacritics-safe), which is what Whisper's own evaluation does.

    >>> normalize("It's 3 PM, Mr. Smith.", "en")
    'it is 3 pm mister smith'
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def _normalizer(kind: str):
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer() if kind == "en" else BasicTextNormalizer()


def is_english(language: str) -> bool:
    lang = (language or "").strip().lower()
    return lang in ("", "en", "eng", "english") or lang.startswith(("en-", "en_"))


def normalize(text: str, language: str = "en") -> str:
    """Whisper-normalize `text` (English normalizer for `en*` or empty language, basic otherwise)."""
    norm = _normalizer("en" if is_english(language) else "basic")
    return " ".join(norm(text or "").split())
