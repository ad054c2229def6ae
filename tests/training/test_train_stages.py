"""End to end: the three stages under Ray Train + DeepSpeed (2 CPU workers, one per node of a local 2-node cluster).

Stage 1 overfits a handful of utterances (ZeRO-2); a run whose worker dies mid-way resumes
from its checkpoint and matches the uninterrupted loss; stage 2 (ZeRO-3) and stage 3 (ZeRO-2)
chain from the previous exports; the final model loads into the streaming generator and speaks.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.training.conftest_train import *  # noqa: F401,F403
from tests.training.conftest_train import tiny_config
from training.metrics import read_jsonl

pytestmark = pytest.mark.slow

STAGE1 = ["max_steps=40", "log_every=1", "checkpoint.every_steps=10", "optim.lr=1e-2", "optim.warmup_steps=2", "optim.schedule=constant",
          "data.micro_batch_size=2", "data.buffer_size=8", "model.talker.chunk_causal_prob=0.0"]


@pytest.fixture(scope="module")
def stage1_run(ray_two_nodes, handful_token_shards, tmp_path_factory):
    from pipelines.train import run

    storage = tmp_path_factory.mktemp("storage")
    cfg = tiny_config(1, handful_token_shards, storage, STAGE1)
    result = run(cfg)
    return cfg, result, storage


def test_stage1_overfits_with_one_worker_per_node(stage1_run):
    cfg, result, storage = stage1_run
    rows = read_jsonl(os.path.join(storage, "stage1", "tensorboard"))
    assert [r["step"] for r in rows] == list(range(1, 41))
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last <= 0.5 * first, (first, last)
    for key in ("loss/cb0", "loss/cb7", "loss/mtp1", "loss/mtp2", "lr", "tokens_per_s"):
        assert key in rows[-1], key
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(storage, "stage1", "tensorboard")))
    # keep last K=2 Ray checkpoints; the final one holds the DeepSpeed state of both ranks + the export
    ckpts = sorted(d for d in os.listdir(os.path.join(storage, "stage1")) if d.startswith("checkpoint_") and not d.endswith(".json"))
    assert len(ckpts) == 2
    final = os.listdir(result.checkpoint.path)
    assert {"latest", "model", "trainer_state_rank0.json", "trainer_state_rank1.json"} <= set(final)
    assert os.path.exists(os.path.join(storage, "stage1", "export", "model.safetensors"))
    placement = json.load(open(os.path.join(storage, "stage1", "tensorboard", "placement.json")))
    assert len(set(placement["nodes_by_rank"])) == 2, placement  # one worker on each node


def test_worker_failure_resumes_to_the_same_loss(stage1_run, handful_token_shards, tmp_path):
    from pipelines.train import run

    cfg_ref, _, ref_storage = stage1_run
    cfg = tiny_config(1, handful_token_shards, tmp_path, STAGE1 + ["crash_at_step=13", "checkpoint.max_failures=1"])
    run(cfg)
    assert os.path.exists(tmp_path / "stage1" / ".crashed_at_13")
    ref = {r["step"]: r["loss"] for r in read_jsonl(os.path.join(ref_storage, "stage1", "tensorboard"))}
    got = {r["step"]: r["loss"] for r in read_jsonl(str(tmp_path / "stage1" / "tensorboard"))}
    for step in (30, 40):
        assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-5), step
