"""The stage recipe in-process, without Ray: the launcher torchrun uses, run as one rank in this process."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

from tests.training.conftest_train import *  # noqa: F401,F403
from tests.training.conftest_train import tiny_config

STEPS = ["log_every=1", "checkpoint.every_steps=1", "checkpoint.num_to_keep=2", "eval_every=2", "optim.schedule=constant",
         "data.micro_batch_size=2", "data.buffer_size=8", "model.talker.chunk_causal_prob=0.0"]


@pytest.fixture
def process_group():
    yield
    from training.local_launch import close_process_group

    close_process_group()


def test_recipe_steps_checkpoints_and_resumes_without_ray(handful_token_shards, tmp_path, process_group):
    from training.local_launch import latest_checkpoint, run_local
    from training.metrics import read_jsonl
    from training.model.vocalnet import VocalNetM2

    ray_loaded = "ray" in sys.modules
    cfg = tiny_config(1, handful_token_shards, tmp_path, STEPS + ["max_steps=2"])
    recipe, reporter, export = run_local(cfg, echo=False)
    assert [r["step"] for r in reporter.reports] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in reporter.reports)
    assert "val_loss" in reporter.reports[-1] and "loss/mtp2" in reporter.reports[-1]
    run_dir = tmp_path / "stage1"
    ckpts = sorted(d for d in os.listdir(run_dir) if d.startswith("checkpoint_") and (run_dir / d).is_dir())
    assert len(ckpts) == 2 and latest_checkpoint(str(run_dir)).endswith(ckpts[-1])
    assert {"latest", "trainer_state_rank0.json", "model", "checksums_rank0.json"} <= set(os.listdir(run_dir / ckpts[-1]))
    assert (run_dir / (ckpts[-1] + ".complete")).exists()  # the launcher's marker sits beside the sealed checkpoint
    assert VocalNetM2.from_pretrained(export).cfg.talker.n_mtp == 2
    placement = json.loads((run_dir / "tensorboard" / "placement.json").read_text())
    n_trainable = sum(p.numel() for p in recipe.model.trainable_parameters())
    assert placement["optimizer_state_bytes_rank0"] == pytest.approx(12 * n_trainable, rel=1e-3)  # fp32 master + 2 Adam moments
    assert ("ray" in sys.modules) == ray_loaded  # nothing on this path imports Ray

    # a rerun with more steps resumes from the step-2 checkpoint: only step 3 runs
    again = tiny_config(1, handful_token_shards, tmp_path, STEPS + ["max_steps=3"])
    _, reporter2, _ = run_local(again, echo=False)
    assert [r["step"] for r in reporter2.reports] == [3]
    assert [r["step"] for r in read_jsonl(str(run_dir / "tensorboard"))] == [1, 2, 3]
    assert recipe.world_size == 1


def test_a_mixture_logs_rows_and_val_loss_per_source_and_resumes_its_order(handful_token_shards, tmp_path, process_group):
    """Sources `a` and `b` (3:1, both with valid rows): `rows/<name>` and `val_loss/<name>` in metrics.jsonl; a run
    stopped at its step-2 checkpoint and rerun to step 4 draws from the sources in the order of an uninterrupted one."""
    import shutil

    import torch

    from training.local_launch import run_local
    from training.metrics import read_jsonl
    from training.recipe import StageRecipe, WorkerContext

    (tmp_path / "b").mkdir()
    for f in handful_token_shards.glob("*.parquet"):
        shutil.copy(f, tmp_path / "b" / f.name)
    mix = [f"data.sources=[{{path: {handful_token_shards}, weight: 3, name: a}}, {{path: {tmp_path / 'b'}, weight: 1}}]",
           "checkpoint.every_steps=2", "eval_batches=1"]
    for steps in (2, 4):
        cfg = tiny_config(1, None, tmp_path, STEPS + mix + [f"max_steps={steps}"])
        run_local(cfg, echo=False)
    logged = read_jsonl(str(tmp_path / "stage1" / "tensorboard"))

    # the uninterrupted order: the same rank's stream, drawn without training
    recipe = StageRecipe(cfg, {}, WorkerContext(0, 1, torch.device("cpu"), report=None))
    recipe.sources = cfg.data.mixture()
    stream, want = recipe._train_stream(), []
    for _, _ in zip(stream, range(4)):
        want.append({f"rows/{n}": float(v) for n, v in stream.rows.items()})
    assert [{k: r[k] for k in ("rows/a", "rows/b")} for r in logged] == want
    assert [r["rows/a"] + r["rows/b"] for r in logged] == [2, 4, 6, 8]  # cumulative over the resume
    assert logged[-1]["rows/a"] > logged[-1]["rows/b"] > 0
    for r in (logged[1], logged[3]):  # eval_every=2: per source, and their 3:1 mean
        assert r["val_loss"] == pytest.approx((3 * r["val_loss/a"] + r["val_loss/b"]) / 4)
