"""VocalNet-M2 model parts, one module each; `VocalNetM2` wires them."""

from training.model.config import (
    AdaptorConfig,
    AudioEncoderConfig,
    FusionConfig,
    TalkerConfig,
    ThinkerConfig,
    VocalNetConfig,
)
from training.model.vocalnet import VocalNetM2

__all__ = [
    "AdaptorConfig", "AudioEncoderConfig", "FusionConfig", "TalkerConfig", "ThinkerConfig",
    "VocalNetConfig", "VocalNetM2",
]
