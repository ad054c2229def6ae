"""`load_codec`: a CLI codec spec -> a `SpeechCodec` backend; the one place that picks backends.

Apart from `tokenization.codec` (the interface) so that backends import only the interface and
the interface imports no backend. The backend is imported when a codec is built, so an entry
point that checks its flags first does not pay for torch and transformers.

    >>> load_codec("tiny").info.n_codebooks
    8
"""

from __future__ import annotations

from tokenization.codec import SpeechCodec
from tokenization.schema import N_CODEBOOKS


def load_codec(spec: str, device: str = "cpu", n_codebooks: int = N_CODEBOOKS) -> SpeechCodec:
    """Build a codec from a CLI spec: `tiny` (random-init tiny Mimi) or a local checkpoint path.

    Nothing is downloaded: a path must exist on disk.
    """
    from tokenization.mimi_codec import MimiCodec

    if spec in ("tiny", "mimi:tiny"):
        return MimiCodec.tiny(n_codebooks=n_codebooks, device=device)
    path = spec.removeprefix("mimi:")
    return MimiCodec.from_pretrained(path, n_codebooks=n_codebooks, device=device)
