"""pipelines.train: CLI, trainer wiring (no training here), node-local storage refusal."""

from __future__ import annotations

import os

import pytest

from pipelines import train as train_cli
from tokenization.errors import UserError
from training.stage_config import CONFIG_DIR, load_config


def test_cli_rejects_a_config_of_another_stage():
    with pytest.raises(ValueError, match="stage-1 config"):
        train_cli.main(["--stage", "3", "--config", os.path.join(CONFIG_DIR, "stage1_tiny.yaml")])


def test_trainer_wiring(tmp_path):
    cfg = load_config(os.path.join(CONFIG_DIR, "stage3_tiny.yaml"),
                      [f"checkpoint.storage_path={tmp_path}", "checkpoint.num_to_keep=3", "checkpoint.max_failures=2",
                       "scaling.num_workers=4"])
    trainer = train_cli.build_trainer(cfg)
    run = trainer.run_config
    assert run.name == "stage3" and run.storage_path == str(tmp_path)
    assert run.checkpoint_config.num_to_keep == 3 and run.failure_config.max_failures == 2
    assert run.worker_runtime_env["env_vars"]["DS_ACCELERATOR"] == "cpu"
    assert trainer.scaling_config.num_workers == 4
    loop_config = trainer.train_loop_config
    assert loop_config["deepspeed"]["train_micro_batch_size_per_gpu"] == cfg.data.micro_batch_size
    assert loop_config["stage"] is cfg and loop_config["stage"].stage == 3  # typed config travels to the workers


def test_gpu_workers_get_no_cpu_accelerator(tmp_path):
    cfg = load_config(os.path.join(CONFIG_DIR, "stage1.yaml"), [f"checkpoint.storage_path={tmp_path}"])
    assert "DS_ACCELERATOR" not in train_cli.worker_env(cfg)
    trainer = train_cli.build_trainer(cfg)
    assert trainer.scaling_config.use_gpu and trainer.train_loop_config["deepspeed"]["bf16"]["enabled"]


def test_multi_node_on_node_local_storage_fails_early(monkeypatch, tmp_path):
    """Two nodes, one of which cannot see the driver's marker: stop before any worker starts."""
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "NodeID": "a" * 56}, {"Alive": True, "NodeID": "b" * 56}])

    class FakeRemote:
        def __init__(self, fn):
            self.fn = fn

        def options(self, scheduling_strategy):
            node = scheduling_strategy.node_id
            return type("R", (), {"remote": staticmethod(lambda path: node == "a" * 56 and os.path.exists(path))})

    monkeypatch.setattr(ray, "remote", lambda **kw: FakeRemote)
    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: ref)
    with pytest.raises(UserError, match="node-local"):
        train_cli.check_shared_storage(str(tmp_path / "ckpts"))
    train_cli.check_shared_storage("s3://bucket/ckpts")  # remote storage: nothing to check
