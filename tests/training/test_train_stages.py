"""End to end: the three stages under Ray Train + DeepSpeed (2 CPU workers, one per node of a local 2-node cluster).

Stage 1 overfits a handful of utterances (ZeRO-2); a run whose worker dies mid-way resumes
from its checkpoint and matches the uninterrupted loss; stage 2 (ZeRO-3) and stage 3 (ZeRO-2)
chain from the previous exports (stage 3 in-process, without Ray); the final model loads into the
streaming generator and speaks.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.training.conftest_train import *  # noqa: F401,F403
from tests.training.conftest_train import tiny_config
from training.metrics import read_jsonl

pytestmark = pytest.mark.slow

STAGE1 = ["max_steps=40", "log_every=1", "checkpoint.every_steps=10", "optim.lr=5e-3", "optim.warmup_steps=2", "optim.schedule=constant",
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
    # the 2 `valid` rows are never trained on; their loss is reported every eval_every (10) steps
    assert [r["step"] for r in rows if "val_loss" in r] == [10, 20, 30, 40]
    assert all(0 < r["val_loss"] < 100 for r in rows if "val_loss" in r)
    assert result.metrics["val_loss"] == rows[-1]["val_loss"]
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
    # constant LR: the first 20 steps of the 40-step reference are what a 20-step run does
    cfg = tiny_config(1, handful_token_shards, tmp_path, STAGE1 + ["max_steps=20", "crash_at_step=13", "checkpoint.max_failures=1"])
    run(cfg)
    assert os.path.exists(tmp_path / "stage1" / ".crashed_at_13")
    ref = {r["step"]: r["loss"] for r in read_jsonl(os.path.join(ref_storage, "stage1", "tensorboard"))}
    got = {r["step"]: r["loss"] for r in read_jsonl(str(tmp_path / "stage1" / "tensorboard"))}
    assert sorted(got) == list(range(1, 21))
    for step in range(11, 21):  # resumed from the step-10 checkpoint: same data, optimizer and RNG states
        assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-5), step


@pytest.fixture(scope="module")
def stage2_run(stage1_run, dialogue_shards, tmp_path_factory):
    from pipelines.train import run

    _, _, storage1 = stage1_run
    storage = tmp_path_factory.mktemp("storage2")
    cfg = tiny_config(2, dialogue_shards, storage, [
        "max_steps=8", "log_every=1", "checkpoint.every_steps=8", "optim.lr=3e-3", "optim.schedule=constant",
        "data.micro_batch_size=2", "data.buffer_size=6", "zero_stage=3", f"checkpoint.init_from=[{storage1}/stage1/export]"])
    run(cfg)
    return cfg, storage


def _falls(rows: list[dict], key: str = "loss") -> tuple[float, float]:
    first = sum(r[key] for r in rows[:3]) / 3
    last = sum(r[key] for r in rows[-3:]) / 3
    return first, last


def test_stage2_zero3_from_stage1_loss_falls(stage1_run, stage2_run):
    from safetensors.torch import load_file

    _, storage = stage2_run
    rows = read_jsonl(os.path.join(storage, "stage2", "tensorboard"))
    assert json.load(open(os.path.join(storage, "stage2", "tensorboard", "placement.json")))["zero_stage"] == 3
    first, last = _falls(rows, "loss/text")
    assert last < first, (first, last)
    # stage 2 trains adaptor + LoRA only: the Talker it exports is stage 1's, bit for bit (ZeRO-3 export gathered it)
    _, _, storage1 = stage1_run
    t1 = load_file(os.path.join(storage1, "stage1", "export", "model.safetensors"))
    t2 = load_file(os.path.join(storage, "stage2", "export", "model.safetensors"))
    talker = [k for k in t1 if k.startswith("talker.")]
    assert talker and all(t1[k].equal(t2[k]) for k in talker)
    assert any(not t1[k].equal(t2[k]) for k in t1 if k.startswith("adaptor."))


def test_stage3_from_stage2_then_speaks(stage2_run, dialogue_shards, tiny_codec, tmp_path):
    """Stage 3 runs in-process through the Ray-free launcher (what torchrun runs): the recipe is the same,
    Ray is not the point here, and it saves a Ray Train start-up."""
    import numpy as np

    from tests.training.conftest_train import first_user_audio
    from training.local_launch import close_process_group, run_local
    from training.inference import GenerationConfig, StreamingGenerator
    from training.model.vocalnet import VocalNetM2

    _, storage2 = stage2_run
    cfg = tiny_config(3, dialogue_shards, tmp_path, [
        "max_steps=8", "log_every=1", "checkpoint.every_steps=8", "optim.lr=3e-3", "optim.schedule=constant",
        # one in-process rank x 4 = the 4 examples per step of the two-worker runs above
        "data.micro_batch_size=4", "data.buffer_size=8", "zero_stage=2", f"checkpoint.init_from=[{storage2}/stage2/export]"])
    try:
        run_local(cfg, echo=False)
    finally:
        close_process_group()
    rows = read_jsonl(str(tmp_path / "stage3" / "tensorboard"))
    first, last = _falls(rows)
    assert last < first, (first, last)
    assert "loss/text" in rows[-1] and "loss/cb0" in rows[-1]

    model = VocalNetM2.from_pretrained(tmp_path / "stage3" / "export").eval()
    gen = StreamingGenerator(model, tiny_codec, gen=GenerationConfig(max_text_tokens=8, max_frames=12, ignore_eos=True))
    wav, codes, report = gen.generate(audio=first_user_audio(dialogue_shards))
    assert codes.shape == (12, 8) and len(wav) > 0 and np.isfinite(wav).all()
    assert report.to_dict()


def test_job_restart_resumes_from_the_latest_checkpoint(stage1_run, handful_token_shards):
    """A new job with the same storage_path + run_name (e.g. after the driver was killed) restores the run:
    it continues from the step-40 checkpoint instead of starting over."""
    from pipelines.train import run

    _, _, storage = stage1_run
    before = read_jsonl(os.path.join(storage, "stage1", "tensorboard"))
    cfg = tiny_config(1, handful_token_shards, storage, [s for s in STAGE1 if not s.startswith("max_steps")] + ["max_steps=42"])
    result = run(cfg)
    lines = [json.loads(x) for x in open(os.path.join(storage, "stage1", "tensorboard", "metrics.jsonl"))]
    assert [r["step"] for r in lines[len(before):]] == [41, 42]  # only the new steps ran
    assert result.metrics["step"] == 42
