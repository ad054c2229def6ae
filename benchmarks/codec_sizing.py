"""Per-worker codec throughput, for sizing a tokenization run; prints one JSON object.

    python benchmarks/codec_sizing.py [--seconds 60] [--batch-size 8] [--device cpu|cuda] [--threads 1]

Measures audio-seconds encoded per wall second by ONE encode worker (the unit the tokenize
job's actor pool scales by), for:
- the tiny Mimi the tests and demo use, and
- a full-size Mimi (transformers' default `MimiConfig`: the geometry of kyutai/mimi) with
  random weights: same layers and FLOPs as the real checkpoint, so its speed is the real one.
Then projects wall hours for a corpus (default 10k hours) onto N such workers. The projection
is arithmetic on the measured rate (`hours * 3600 / (rate * N)`), not a measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokenization.mimi_codec import MimiCodec  # noqa: E402


def full_size_mimi(device: str) -> MimiCodec:
    """kyutai/mimi's architecture from transformers' defaults, random-init (no download)."""
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    return MimiCodec(MimiModel(MimiConfig()), checkpoint_id="mimi-full-size-random-init", device=device)


def rate(codec: MimiCodec, seconds: float, batch_size: int, clip_s: float = 10.0) -> float:
    """Audio seconds per wall second over `seconds` of 10 s clips of noise-modulated tones."""
    rng = np.random.default_rng(0)
    sr = codec.sample_rate
    n = max(batch_size, int(seconds / clip_s))
    clips = [(0.1 * rng.standard_normal(int(clip_s * sr))).astype(np.float32) for _ in range(n)]
    codec.encode(clips[:1])  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        codec.encode(clips[i : i + batch_size])
    return n * clip_s / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=80.0, help="audio seconds to encode per codec")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (an actor with num_cpus=1)")
    p.add_argument("--corpus-hours", type=float, default=10_000.0)
    p.add_argument("--workers", type=int, nargs="*", default=[1, 8, 32, 64])
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    tiny = rate(MimiCodec.tiny(device=args.device), args.seconds, args.batch_size)
    full = rate(full_size_mimi(args.device), args.seconds, args.batch_size)
    projected = {str(n): round(args.corpus_hours * 3600 / (full * n) / 3600, 1) for n in args.workers}
    print(json.dumps({
        "measured": {
            "tiny_mimi_audio_s_per_s_per_worker": round(tiny, 1),
            "full_mimi_audio_s_per_s_per_worker": round(full, 2),
            "device": args.device, "torch_threads": args.threads, "batch_size": args.batch_size,
        },
        "projected": {
            "corpus_hours": args.corpus_hours,
            "wall_hours_full_mimi_by_workers": projected,
            "basis": "measured full-size rate x workers; assumes reading/resampling keep up (pipeline_vs_bare ~1 in tokenize_throughput)",
        },
    }))


if __name__ == "__main__":
    main()
