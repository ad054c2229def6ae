"""The `SpeechCodec` interface: waveform <-> `[T, K]` codes.

Every stage (tokenization, dialogue shards, streaming decode) talks to a codec only
through this interface, so another codec (e.g. XY-Tokenizer) slots in by adding a
backend and a branch in `tokenization.codec_factory.load_codec`. This module imports no
backend: backends import it, and only the factory imports them (no import cycle).

Shape legend: B batch, K codebooks, T frames, S samples.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CodecInfo:
    """Facts written into every shard's file metadata."""

    name: str
    version: str
    checkpoint_id: str
    sample_rate: int
    frame_rate: float
    n_codebooks: int
    codebook_size: int


class SpeechCodec(abc.ABC):
    """Encode mono waveforms at `sample_rate` to codes and back."""

    info: CodecInfo

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.info.frame_rate

    @property
    def n_codebooks(self) -> int:
        return self.info.n_codebooks

    @property
    def codebook_size(self) -> int:
        return self.info.codebook_size

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))

    def n_frames(self, n_samples: int) -> int:
        """Frames the codec emits for `n_samples` of audio: ceil(duration x frame rate)."""
        return math.ceil(n_samples / self.samples_per_frame)

    @abc.abstractmethod
    def encode(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Encode a batch of mono float32 waveforms (any lengths).

        Args:
            waveforms: B arrays of shape [S_b] at `sample_rate`.
        Returns:
            B uint16 arrays of shape [T_b, K], T_b = n_frames(S_b).
        """

    @abc.abstractmethod
    def decode(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        """Decode a batch of code arrays back to audio.

        Args:
            codes: B integer arrays of shape [T_b, K].
        Returns:
            B float32 waveforms of shape [T_b * samples_per_frame].
        """

