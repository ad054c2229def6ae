"""Training scaling benchmark of the real stage recipe: ZeRO-2 optimizer-state sharding and Ray Train overhead.

    python benchmarks/train_scaling.py [--steps 20] [--log-every 5] [--micro-batch 4]

Runs `training.recipe` (stage 1, tiny VocalNet-M2, ZeRO-2) on synthetic token shards: under
plain `torchrun` with 1 and 2 ranks (this script re-launched as the worker, through
`training.local_launch`), in-process with one rank (the same worker without torchrun), under
Ray Train with 2 and 1 workers (`python -m pipelines.train`), and as the one trial of a
`python -m pipelines.experiment` run (Ray Tune + Ray Train). Figures come from what the
recipe itself records: `placement.json` (rank 0's optimizer-state bytes) and `metrics.jsonl`
(all-reduced samples/s per logging window of `--log-every` steps, the first window left out;
a window includes the report to the launcher, as in a real run). Prints one JSON object:

    zero2_state_bytes_2rank_vs_1rank   per-rank optimizer state with ZeRO-2 on 2 ranks / on 1 rank; goal <= 0.55
    ray_vs_torchrun_samples_per_s      samples/s of the same recipe (2 ranks) under Ray Train / under torchrun; goal >= 0.9
    ray_train_step_vs_inprocess        steady-state step time of one worker through `python -m pipelines.train` / the
                                       same recipe's steps in-process (`training.local_launch.run_local`, one rank,
                                       no launcher); goal <= 1.05 (Ray's own release gate: 1.15)
    trial_startup_s                    seconds from a Ray Tune trial's start to its first logged step, for a one-trial
                                       `python -m pipelines.experiment` run (Train controller, worker, DeepSpeed, data)

plus the raw figures and the CPU they ran on. CPU runs use DeepSpeed's CPU accelerator over gloo.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("DS_ACCELERATOR", "cpu")
CONFIG = os.path.join(REPO, "training", "configs", "stage1_tiny.yaml")

from benchmarks.cpu_info import cpu_info  # noqa: E402


def write_shards(folder: str, n: int = 64, seed: int = 0) -> str:
    """Synthetic stage-1 token shards through the shard contract: short texts, random codes [T, 8]."""
    import numpy as np
    import pyarrow.parquet as pq

    from tokenization.schema import TokenRow, rows_to_table

    rng = np.random.default_rng(seed)
    words = "the quick brown fox jumps over a lazy dog while seven birds sing".split()
    rows = []
    for i in range(n):
        t = int(rng.integers(20, 40))
        text = " ".join(rng.choice(words, size=int(rng.integers(4, 9))))
        rows.append(TokenRow(f"u{i}", "bench", f"s{i}", "en", text, t / 12.5, t, rng.integers(0, 2048, (t, 8)).astype(np.uint16),
                             "0" * 40, "bench", "train"))
    os.makedirs(folder, exist_ok=True)
    pq.write_table(rows_to_table(rows), os.path.join(folder, "shard-00000.parquet"), row_group_size=8)
    return folder


def overrides(args, data: str, storage: str, workers: int) -> list[str]:
    steps, micro_batch = args.steps, args.micro_batch
    return [f"data.path={data}", f"checkpoint.storage_path={storage}", f"max_steps={steps}", f"log_every={args.log_every}", "eval_every=0",
            f"checkpoint.every_steps={steps}", f"data.micro_batch_size={micro_batch}", f"data.buffer_size={4 * micro_batch}",
            "data.max_frames=0", "zero_stage=2", f"scaling.num_workers={workers}", "optim.schedule=constant"]


def figures(storage: str) -> dict:
    """What the recipe recorded: mean samples/s of the windows after the first, rank 0's optimizer-state bytes."""
    from training.metrics import read_jsonl

    log_dir = os.path.join(storage, "stage1", "tensorboard")
    rows = read_jsonl(log_dir)[1:]
    with open(os.path.join(log_dir, "placement.json")) as f:
        placement = json.load(f)
    return {"samples_per_s": sum(r["samples_per_s"] for r in rows) / len(rows),
            "state_bytes": placement["optimizer_state_bytes_rank0"], "world_size": len(placement["nodes_by_rank"])}


def run_torchrun(args, data: str, workers: int) -> dict:
    storage = tempfile.mkdtemp(prefix=f"bench_torchrun{workers}_")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={workers}", "--master_port=29533",
           os.path.abspath(__file__), "--worker", *overrides(args, data, storage, workers)]
    env = {**os.environ, "PYTHONPATH": REPO, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return figures(storage)


def run_ray(args, data: str, workers: int) -> dict:
    storage = tempfile.mkdtemp(prefix=f"bench_ray{workers}_")
    cmd = [sys.executable, "-m", "pipelines.train", "--stage", "1", "--config", CONFIG,
           *overrides(args, data, storage, workers)]
    env = {**os.environ, "PYTHONPATH": REPO, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return figures(storage)


def run_inprocess(args, data: str) -> dict:
    """The recipe's steps in one process: run_local's one-rank group, no launcher (this script as `--worker`)."""
    storage = tempfile.mkdtemp(prefix="bench_inprocess_")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *overrides(args, data, storage, 1)]
    env = {**os.environ, "PYTHONPATH": REPO, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return figures(storage)


def run_trial(args, data: str) -> dict:
    """One trial of a one-point experiment, as users run it: `python -m pipelines.experiment`; its results row."""
    import yaml

    folder = tempfile.mkdtemp(prefix="bench_experiment_")
    exp = {"name": "startup", "base": CONFIG, "stage": 1, "resources": {"num_workers": 1, "cpus_per_worker": 1},
           "overrides": [o for o in overrides(args, data, folder, 1) if not o.startswith(("checkpoint.storage_path", "scaling."))],
           "trials": [{"log_every": 1}]}
    path = os.path.join(folder, "startup.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(exp, f)
    env = {**os.environ, "PYTHONPATH": REPO, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "RAY_ADDRESS": "local"}
    subprocess.run([sys.executable, "-m", "pipelines.experiment", "--config", path, "--output", os.path.join(folder, "out")],
                   check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(folder, "out", "results.jsonl")) as f:
        return json.loads(f.readline())


def worker(extra: list[str]) -> None:
    """One torchrun rank: the recipe through the Ray-free launcher."""
    import torch

    from training.local_launch import run_local
    from training.stage_config import load_config

    torch.set_num_threads(1)
    run_local(load_config(CONFIG, extra, stage=1), echo=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--log-every", type=int, default=5, help="steps per logging window (the first is warm-up, left out)")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, extra = p.parse_known_args()
    if args.worker:
        worker(extra)
        return
    data = write_shards(tempfile.mkdtemp(prefix="bench_shards_"))
    one, two = run_torchrun(args, data, 1), run_torchrun(args, data, 2)
    ray_two = run_ray(args, data, 2)
    inprocess, ray_one = run_inprocess(args, data), run_ray(args, data, 1)
    trial = run_trial(args, data)
    print(json.dumps({
        "zero2_state_bytes_2rank_vs_1rank": round(two["state_bytes"] / one["state_bytes"], 4),
        "ray_vs_torchrun_samples_per_s": round(ray_two["samples_per_s"] / two["samples_per_s"], 4),
        # one worker, same micro-batch: step time ratio = samples/s in-process / samples/s under Ray Train
        "ray_train_step_vs_inprocess": round(inprocess["samples_per_s"] / ray_one["samples_per_s"], 4),
        "trial_startup_s": trial["trial_startup_s"],
        "step_s_inprocess": round(args.micro_batch / inprocess["samples_per_s"], 4),
        "step_s_ray_1worker": round(args.micro_batch / ray_one["samples_per_s"], 4),
        "trial_wall_s": trial["wall_s"],
        "state_bytes_per_rank_1rank": one["state_bytes"],
        "state_bytes_per_rank_2rank": two["state_bytes"],
        "state_bytes_per_rank_2rank_ray": ray_two["state_bytes"],
        "samples_per_s_torchrun_1rank": round(one["samples_per_s"], 3),
        "samples_per_s_torchrun_2rank": round(two["samples_per_s"], 3),
        "samples_per_s_ray_2rank": round(ray_two["samples_per_s"], 3),
        "steps": args.steps, "log_every": args.log_every, "micro_batch": args.micro_batch, "zero_stage": 2,
        "what": "training.recipe stage 1, tiny VocalNet-M2 (n_mtp=2), synthetic token shards",
        "device": "cpu (DS_ACCELERATOR=cpu, gloo)", "cpu": cpu_info(),
    }))


if __name__ == "__main__":
    main()
