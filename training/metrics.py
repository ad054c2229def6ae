"""Training metrics: per-part losses averaged over ranks, throughput, learning rate; TensorBoard + JSONL.

Rank 0 writes; every rank takes part in the all-reduce. Metric names follow the model's
output keys (`loss`, `loss/text`, `loss/cb0`.., `loss/mtp1`..), plus `lr`, `tokens_per_s`,
`samples_per_s`, `step`, `rows/<source>` (rows drawn from each data source since step 0, all
ranks), and every `eval_every` steps `val_loss/<source>` (on that source's `valid` rows) and
`val_loss` (their mean, weighted as the sources are).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import torch
import torch.distributed as dist



def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a small CPU tensor over all ranks; a CPU tensor back (as is outside torch.distributed).

    NCCL reduces only CUDA tensors and gloo only CPU ones, so the tensor travels on the
    collective's own device.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return t
    on_gpu = dist.get_backend() == "nccl"
    t = t.to(torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu")
    dist.all_reduce(t)
    return t.cpu()

class StepMeter:
    """Accumulates the model's scalar outputs over the micro-batches of a logging window.

    Losses are averaged (weighted by micro-batch), counts (`n_*` keys) summed; `reduce`
    all-reduces across ranks so every rank returns the same numbers.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.micro_batches = 0
        self.samples = 0
        self.tokens = 0
        self.t0 = time.perf_counter()

    def add(self, outputs: dict[str, torch.Tensor], samples: int, tokens: int) -> None:
        for key, value in outputs.items():
            if key.startswith("loss") and torch.is_tensor(value) and value.numel() == 1:
                self.sums[key] += float(value.detach())
        self.micro_batches += 1
        self.samples += samples
        self.tokens += tokens

    def reduce(self) -> dict[str, float]:
        """Means of the losses and global throughput over the window (collective on all ranks)."""
        keys = sorted(self.sums)
        local = torch.tensor([self.sums[k] for k in keys] + [self.micro_batches, self.samples, self.tokens], dtype=torch.float64)
        local = all_reduce_sum(local)
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        n_micro = max(local[-3].item(), 1.0)
        out = {k: local[i].item() / n_micro for i, k in enumerate(keys)}
        out["samples_per_s"] = local[-2].item() / elapsed
        out["tokens_per_s"] = local[-1].item() / elapsed
        return out


class MetricsWriter:
    """TensorBoard event files plus a `metrics.jsonl` (one line per logged step) in `log_dir`."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.tb = SummaryWriter(log_dir)
        self.jsonl = open(os.path.join(log_dir, "metrics.jsonl"), "a")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.tb.add_scalar(key, value, step)
        self.tb.flush()
        # wall_time (Unix seconds, the JSONL only): when the step was logged, e.g. a trial's start-up to its first step
        self.jsonl.write(json.dumps({"step": step, **metrics, "wall_time": time.time()}) + "\n")
        self.jsonl.flush()

    def write_json(self, name: str, obj: dict) -> None:
        with open(os.path.join(self.log_dir, name), "w") as f:
            json.dump(obj, f, indent=1)

    def close(self) -> None:
        self.tb.close()
        self.jsonl.close()


def read_jsonl(log_dir: str) -> list[dict]:
    """The logged steps, the last line per step winning (a resumed run re-logs replayed steps)."""
    by_step = {}
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def format_progress(stage: int, max_steps: int, m: dict[str, float]) -> str:
    """One line for the driver's console."""
    parts = [f"stage {stage} step {int(m.get('step', 0))}/{max_steps}", f"loss {m.get('loss', float('nan')):.4f}"]
    if "val_loss" in m:
        parts.append(f"val_loss {m['val_loss']:.4f}")
    parts += [f"{k.split('/', 1)[1]} {v:.3f}" for k, v in m.items() if k.startswith("loss/") and not k.startswith("loss/cb")]
    cbs = [v for k, v in m.items() if k.startswith("loss/cb")]
    if cbs:
        parts.append(f"cb(mean) {sum(cbs) / len(cbs):.3f}")
    parts += [f"lr {m.get('lr', 0):.2e}", f"{m.get('tokens_per_s', 0):.0f} tok/s"]
    return " | ".join(parts)
