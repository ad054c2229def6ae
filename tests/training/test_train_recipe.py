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
