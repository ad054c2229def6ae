"""pipelines.experiment: every shipped YAML loads, the dry-run table and its one-line errors, and a two-trial sweep
end to end (Ray Tune trials of Ray Train runs, a row per trial, a rerun that skips both, nothing of a trial left)."""

from __future__ import annotations

import glob
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from tests.jobs import ROOT
from tests.training.conftest_train import synthetic_token_shards
from training.experiment import RESULT, expand, load_experiment, trial_config

EXPERIMENTS = sorted(glob.glob(str(ROOT / "experiments" / "*.yaml")))


def test_the_paper_experiments_ship_and_every_trial_config_loads(tmp_path):
    names = {Path(p).stem for p in EXPERIMENTS}
    assert {"mtp_depth", "codebooks", "data_quality", "data_scale"} <= names
    for path in EXPERIMENTS:
        exp = load_experiment(path)
        trials = expand(exp)
        assert len(trials) >= 2, path
        cfgs = [trial_config(exp, t, str(tmp_path)) for t in trials]  # strict: a bad key in any trial fails here
        assert len({c.checkpoint.run_name for c in cfgs}) == len(trials), path  # a folder (config hash) per trial
        assert Path(path).read_text().startswith("#") and "python -m pipelines.experiment --config" in Path(path).read_text()
        # a trial runs in Ray Tune's own working folder: what it evaluates on is resolved where the command runs
        assert exp.evaluate is None or not exp.evaluate.data or os.path.isabs(exp.evaluate.data), path
    depth = [trial_config(load_experiment(p), t, str(tmp_path)).model.talker.n_mtp
             for p in EXPERIMENTS if p.endswith("mtp_depth.yaml") for t in expand(load_experiment(p))]
    assert depth == [0, 1, 2, 3, 4, 5]
    quality = load_experiment(str(ROOT / "experiments" / "data_quality.yaml"))
    assert [trial_config(quality, t, str(tmp_path)).data.sources[0].max_wer for t in expand(quality)] == [0.05, 0.1, 0.2, math.inf]


def write_experiment(tmp_path: Path, data: Path, extra: dict | None = None) -> Path:
    exp = {"name": "tiny", "description": "two MTP depths", "base": str(ROOT / "training" / "configs" / "stage1_tiny.yaml"),
           "stage": 1,
           "overrides": [f"data.path={data}", "max_steps=2", "log_every=1", "eval_every=2", "eval_batches=1",
                         "checkpoint.every_steps=2", "data.micro_batch_size=2", "data.buffer_size=4", "data.max_frames=0"],
           "grid": {"model.talker.n_mtp": [0, 1]}, "resources": {"num_workers": 1, "cpus_per_worker": 1},
           "plot": {"x": "model.talker.n_mtp", "y": ["val_loss", "eval.talker_forwards_per_reply"]}, **(extra or {})}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    splits = ["train"] * 10 + ["valid"] * 2
    return synthetic_token_shards(tmp_path_factory.mktemp("exp_tokens"), splits, frames=[12 + 3 * i for i in range(12)])


def test_dry_run_table_and_a_bad_key_in_one_line(tmp_path, tiny_data, capsys):
    import ray

    from pipelines.cli import run
    from pipelines.experiment import main

    path = write_experiment(tmp_path, tiny_data)
    out = main(["--config", str(path), "--output", str(tmp_path / "out"), "--dry-run"])
    table = capsys.readouterr().out
    assert [r["trial"] for r in out["trials"]] == ["model.talker.n_mtp=0", "model.talker.n_mtp=1"]
    for r in out["trials"]:
        assert r["train_rows"] == 10 and r["max_steps"] == 2 and r["zero2_gb_per_gpu"] > 0 and not r["done"]
        assert r["config_hash"] in table and r["trial"] in table
    assert out["trials"][0]["zero2_gb_per_gpu"] < out["trials"][1]["zero2_gb_per_gpu"]  # an MTP module more to train
    bad = write_experiment(tmp_path, tiny_data, {"trials": [{"model.talker.n_mtp": 1}, {"model.talker.n_mtpp": 2}], "grid": {}})
    with pytest.raises(SystemExit) as exit_:
        run(main, ["--config", str(bad), "--output", str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {bad}: trial 1 (model.talker.n_mtpp=2)") and "model.talker.n_mtpp: unknown key" in err, err
    assert not ray.is_initialized()  # nothing booked


@pytest.mark.slow
def test_two_trial_sweep_end_to_end_then_a_rerun_skips_both(tmp_path, tiny_data, monkeypatch, capsys):
    """Two Tune trials side by side (1 worker each on the 2-CPU embedded cluster), each evaluated by pipelines.evaluate."""
    import ray
    from ray._private.state import actors

    from pipelines.experiment import main

    monkeypatch.setenv("RAY_ADDRESS", "local")  # a fresh embedded cluster, never another one on this machine
    monkeypatch.setenv("VOCALNET_RAY_DASHBOARD", "0")
    path = write_experiment(tmp_path, tiny_data, {"evaluate": {"split": "all", "max_dialogues": 1, "max_frames": 8,
                                                                "max_text_tokens": 4}})
    out = tmp_path / "out"
    try:
        summary = main(["--config", str(path), "--output", str(out)])
        assert (summary["trials"], summary["trained"], summary["done"], summary["reused"]) == (2, 2, 2, 0)
        job = ray.get_runtime_context().get_job_id()
        assert not [pg for pg, info in ray.util.placement_group_table().items() if info["state"] != "REMOVED"]
        # named actors are cluster services shared by jobs (Ray's detached AutoscalingCoordinator), not a trial's
        assert not [a for a, info in actors().items() if info["JobID"] == job and not info["Name"] and info["State"] != "DEAD"]
        assert summary["actors_left"] == summary["placement_groups_left"] == 0
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["overrides"] for r in rows] == [{"model.talker.n_mtp": 0}, {"model.talker.n_mtp": 1}]
    for r in rows:
        folder = out / "trials" / r["config_hash"]
        assert r["status"] == "done" and r["steps"] == 2 and not r["reused"] and (folder / RESULT).is_file()
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) and "val_loss/exp_tokens0" in r["losses"]
        assert r["tokens_seen"] > 0 and r["tokens_per_s"] > 0 and 0 < r["trial_startup_s"] <= r["wall_s"]
        assert (folder / "export" / "model.safetensors").is_file() and (folder / "eval" / "eval.json").is_file()
        assert r["eval"]["talker_forwards_per_reply"] > 0
    assert "loss/mtp1" in rows[1]["losses"] and "loss/mtp1" not in rows[0]["losses"]
    assert len(rows[1]["eval"]["mtp_acc"]) == 1 and rows[0]["eval"]["mtp_acc"] == []
    md = (out / "results.md").read_text()
    assert all(r["config_hash"] in md for r in rows)
    assert "data:image/png;base64," in (out / "index.html").read_text()
    stamps = {r["config_hash"]: (out / "trials" / r["config_hash"] / RESULT).stat().st_mtime_ns for r in rows}

    again = main(["--config", str(path), "--output", str(out)])  # both finished: nothing trains, no Ray starts
    assert (again["trained"], again["reused"], again["done"]) == (0, 2, 2) and not ray.is_initialized()
    rerun = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["reused"] for r in rerun) and [r["val_loss"] for r in rerun] == [r["val_loss"] for r in rows]
    assert {h: (out / "trials" / h / RESULT).stat().st_mtime_ns for h in stamps} == stamps
    assert os.path.isdir(out / "trials")
