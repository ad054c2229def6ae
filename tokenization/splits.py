"""Train/valid/test split assignment: a stable hash of the speaker, so no speaker crosses splits.

The split of a row depends only on its key (the speaker; the utterance or dialogue id when
there is no speaker), the fractions and the salt: a rerun, another machine or another job
(tokenize, filter, evaluate) assigns the same split. sha1 is used, not Python's `hash`,
which is salted per process.

The unit interval is cut in order train | valid | test, and a key's hash picks a point in
it. With few speakers the splits are lumpy (the bundled 4-voice sample has 3 train voices,
1 test voice and no valid one at the default 0.1/0.1); fractions hold over many speakers.

    >>> cfg = SplitConfig(valid=0.1, test=0.1)
    >>> cfg.assign("spk_0042") in SPLITS
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)


@dataclass(frozen=True)
class SplitConfig:
    """Share of keys (speakers) in valid and test; the rest is train. `salt` reshuffles all keys."""

    valid: float = 0.1
    test: float = 0.1
    salt: str = ""

    def __post_init__(self):
        if not (0.0 <= self.valid and 0.0 <= self.test and self.valid + self.test <= 1.0):
            raise ValueError(f"split fractions must be >= 0 and sum to <= 1: valid={self.valid}, test={self.test}")

    def to_dict(self) -> dict:
        return asdict(self)

    def assign(self, key: str) -> str:
        """`train`, `valid` or `test` for one key."""
        u = unit_hash(key, self.salt)
        if u < 1.0 - self.valid - self.test:
            return TRAIN
        return VALID if u < 1.0 - self.test else TEST


def unit_hash(key: str, salt: str = "") -> float:
    """A point in [0, 1) drawn from sha1(salt, key): uniform over keys, same on every run."""
    digest = hashlib.sha1(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_key(speaker: str | None, fallback_id: str) -> str:
    """The key a row is split by: its speaker, else its own (utterance or dialogue) id."""
    return speaker if speaker else f"id:{fallback_id}"


def assign_split(speaker: str | None, fallback_id: str, cfg: SplitConfig) -> str:
    return cfg.assign(split_key(speaker, fallback_id))
