"""Evaluate a trained VocalNet-M2: ASR-WER of its speech, first-chunk latency, RTF, teacher-forced accuracy.

    python -m pipelines.evaluate --checkpoint out/train/stage3/export --data out/filtered/kept --split test --output out/eval
    python -m pipelines.evaluate --checkpoint ckpt/export --data s3://bucket/dialogues/kept --split test \
        --asr faster-whisper:/models/whisper-large-v3-ct2 --codec /models/mimi --device cuda --output out/eval

Writes `OUT/eval.json` (summary + one row per reply), `OUT/eval.md` and `OUT/eval.html`, and
prints the headline numbers as one JSON line.

No Ray: a plain loop in the driver, on purpose. Latency and real-time factor are per-request
numbers and are measured one request at a time on one model; a test split is small enough
that fanning it out would only add start-up time (and perturb the latency being measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pipelines.args import add_asr_args
from pipelines.cli import require_at_least, require_checkpoint, require_codec, require_input, require_writable_folder, run
from pipelines.logs import setup_logging
from tokenization.errors import UserError

HEADLINE_KEYS = ("n_dialogues", "n_replies", "wer", "first_chunk_latency_s", "rtf", "text_acc", "speech_acc",
                 "codebook_acc", "mtp_acc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="exported model (pipelines.train's <run>/export) or a Ray checkpoint holding model/")
    p.add_argument("--data", required=True, help="dialogue shards (the filter job's OUT/kept) or token shards, local or s3://")
    p.add_argument("--split", default="test", help="train | valid | test: rows whose `split` column equals it; all: every row")
    p.add_argument("--output", required=True, help="folder for eval.json, eval.md, eval.html")
    p.add_argument("--codec", default="tiny", help="'tiny' or a local Mimi checkpoint folder (the codec of the training codes)")
    p.add_argument("--max-dialogues", type=int, default=0, help="evaluate the first N rows of the split (0: all)")
    p.add_argument("--reply", choices=("generate", "reference"), default="generate",
                   help="generate: the Thinker writes the reply; reference: the Talker speaks the reference reply")
    p.add_argument("--max-text-tokens", type=int, default=128)
    p.add_argument("--max-frames", type=int, default=None, help="cap on reply frames (default: the Talker's positions)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--no-chunk-causal", action="store_true", help="teacher forcing with full text context")
    p.add_argument("--batch-size", type=int, default=4, help="examples per teacher-forced batch")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or folder (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the checkpoint's)")
    p.add_argument("--asr-device", default="cpu")
    add_asr_args(p)  # --asr, --asr-backend: as pipelines.filter
    return p.parse_args(argv)


def check_args(a: argparse.Namespace) -> str:
    """Paths and numbers, before the data is read or a model loads; returns the model folder."""
    model_dir = require_checkpoint("--checkpoint", a.checkpoint)
    require_input("--data", a.data, "pass the filter job's OUT/kept (or token shards)")
    require_writable_folder("--output", a.output)
    require_codec("--codec", a.codec)
    if a.tokenizer:
        require_input("--tokenizer", a.tokenizer, "pass a tokenizer.json or its folder")
    require_at_least("--max-dialogues", a.max_dialogues, 0)
    require_at_least("--batch-size", a.batch_size, 1)
    require_at_least("--max-text-tokens", a.max_text_tokens, 1)
    require_at_least("--max-frames", a.max_frames, 1)
    return model_dir


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    model_dir = check_args(a)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from filtering.asr import load_asr
    from tokenization.codec_factory import load_codec
    from training.checkpointing import localize
    from training.evaluation import EvalConfig, evaluate, read_examples, render_html, render_markdown
    from training.inference import GenerationConfig
    from training.model import VocalNetM2

    try:
        examples = read_examples(a.data, a.split, a.max_dialogues)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"--data {a.data} (--split {a.split}): {exc}") from None
    setup_logging("evaluate", a.output)  # OUT/logs/evaluate.log, once the run is sure to go ahead
    t0 = time.time()
    model = VocalNetM2.from_pretrained(localize(model_dir), device=a.device, tokenizer_path=a.tokenizer)
    codec = load_codec(a.codec, device=model.cfg.device, n_codebooks=model.cfg.talker.n_codebooks)
    asr = load_asr(a.asr, device=a.asr_device, backend_choice=a.asr_backend)
    gen = GenerationConfig(max_text_tokens=a.max_text_tokens, max_frames=a.max_frames, temperature=a.temperature)
    cfg = EvalConfig(batch_size=a.batch_size, chunk_causal=not a.no_chunk_causal, reply=a.reply)

    def progress(done: int, total: int, row: dict) -> None:
        print(f"[{done}/{total}] {row['id']}: wer {row['wer']:.3f}, first chunk {row['first_chunk_latency_s'] or 0:.3f} s",
              file=sys.stderr, flush=True)

    summary = evaluate(model, codec, asr, examples, gen, cfg, progress=progress)
    summary = {"checkpoint": a.checkpoint, "data": a.data, "split": a.split, **summary, "wall_s": time.time() - t0}
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=1))
    title = f"Evaluation of {a.checkpoint} on {a.data} (split {a.split})"
    (out / "eval.md").write_text(render_markdown(summary, title))
    (out / "eval.html").write_text(render_html(summary, title))
    headline = {k: summary[k] for k in HEADLINE_KEYS}
    print(json.dumps({**headline, "output": str(out)}))
    return summary


if __name__ == "__main__":
    run(main)
