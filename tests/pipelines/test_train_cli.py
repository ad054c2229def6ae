"""pipelines.train: CLI, trainer wiring (no training here), node-local storage refusal."""

from __future__ import annotations

import os

import pytest

from pipelines import train as train_cli
from tests.training.conftest_train import synthetic_token_shards
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


# Published sizes (Hugging Face config.json of Qwen/Qwen3-8B and openai/whisper-large-v3), written by the test:
QWEN3_8B = {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 12288, "vocab_size": 151936, "tie_word_embeddings": False, "model_type": "qwen3"}
WHISPER_LARGE_V3 = {"num_mel_bins": 128, "d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
                    "encoder_ffn_dim": 5120, "max_source_positions": 1500, "model_type": "whisper"}


def test_dry_run_paper_preset_on_the_meta_device(tmp_path, capsys):
    """Sizes from the checkpoints' config.json (no weights there at all), data figures from the shards, in seconds."""
    import json
    import time

    from pipelines.cli import run

    for name, cfg in (("whisper", WHISPER_LARGE_V3), ("qwen", QWEN3_8B)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    data = synthetic_token_shards(tmp_path / "tokens", ["train"] * 6 + ["valid"] * 2)
    t0 = time.perf_counter()
    run(train_cli.main, ["--stage", "1", "--config", os.path.join(CONFIG_DIR, "stage1.yaml"), "--dry-run", "--json",
                         f"model.audio.path={tmp_path}/whisper", f"model.thinker.path={tmp_path}/qwen", f"data.path={data}",
                         "scaling.num_workers=2", "data.micro_batch_size=1", "optim.grad_accum=1"])
    seconds = time.perf_counter() - t0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"]["thinker"] == pytest.approx(8.19e9, rel=0.02)
    assert plan["parameters"]["audio_encoder"] == pytest.approx(0.64e9, rel=0.02)
    assert any(str(tmp_path / "qwen" / "config.json") in s for s in plan["sizes_from"])
    # stage 1 trains fusion + Talker + MTP only
    assert plan["trainable"]["thinker"] == plan["trainable"]["lora"] == plan["trainable"]["audio_encoder"] == 0
    assert plan["trainable_total"] == plan["parameters"]["fusion"] + plan["parameters"]["talker"] + plan["parameters"]["mtp"] > 0
    z = plan["zero_memory"]
    assert 0 < z["all_params"]["zero3_gb_per_gpu"] < z["all_params"]["zero2_gb_per_gpu"]
    assert plan["data"]["splits"]["train"]["rows"] == 6 and plan["data"]["splits"]["valid"]["rows"] == 2
    assert plan["data"]["splits"]["train"]["hours"] == pytest.approx(6 * 2.0 / 3600, abs=1e-6)
    assert plan["steps_per_epoch"] == 3  # 6 train examples / (2 workers x 1 x 1)
    assert plan["tokens_per_step"] == 2 * 25 * 8  # 2 examples of 25 frames x 8 codebooks
    assert seconds < 60, seconds


def test_dry_run_warns_about_what_is_only_on_the_cluster(capsys):
    """The shipped stage-1 YAML on a laptop: /models and /data are not here; sizes from the preset, warnings say what is missing."""
    import json

    from pipelines.cli import run

    run(train_cli.main, ["--stage", "1", "--config", os.path.join(CONFIG_DIR, "stage1.yaml"), "--dry-run", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"]["thinker"] == pytest.approx(8.19e9, rel=0.02)
    text = " ".join(plan["warnings"])
    assert "/models/Qwen3-8B/config.json" in text and "data.path /data/tokens/shards" in text and "steps per epoch" in text


def test_dry_run_counts_dialogue_pairs_without_reading_audio_or_codes(tmp_path, capsys):
    """Stage 3 on dialogue shards (tokenization.dialogue_schema): examples are (user, assistant-with-codes) pairs."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenization.audio import WHISPER_SAMPLE_RATE as SAMPLE_RATE
    from tokenization.dialogue_schema import ASSISTANT, USER, DialogueRow, DialogueTurn, dialogue_schema
    from pipelines.cli import run

    def turn(role, seconds, frames):
        return DialogueTurn(role, "hello there", b"", SAMPLE_RATE, seconds, np.zeros((frames, 8), np.uint16) if frames else None, frames)

    rows = [DialogueRow(f"d{i}", "t", "en", "s", [turn(USER, 3.0, 0), turn(ASSISTANT, 2.0, 25 if i else 0)], split=split)
            for i, split in enumerate(["train", "train", "train", "valid"])]
    (tmp_path / "kept").mkdir()
    pq.write_table(pa.Table.from_pylist([r.to_dict() for r in rows], schema=dialogue_schema()), tmp_path / "kept" / "part-0.parquet")
    run(train_cli.main, ["--stage", "3", "--config", os.path.join(CONFIG_DIR, "stage3_tiny.yaml"), "--dry-run", "--json",
                         f"data.path={tmp_path / 'kept'}", f"checkpoint.init_from=[{tmp_path}/no-export]",
                         "scaling.num_workers=1", "data.micro_batch_size=1"])
    plan = json.loads(capsys.readouterr().out)
    train = plan["data"]["splits"]["train"]
    assert train["rows"] == 3 and train["examples"] == 2  # the first reply has no codes: not a stage-3 example
    assert train["hours"] == pytest.approx(3 * 5.0 / 3600, abs=1e-6)
    assert plan["steps_per_epoch"] == 2
    assert "parameters" not in plan and any("no-export" in w and "not computed" in w for w in plan["warnings"])
    # data.max_audio_s drops pairs whose user speech is longer, as the training stream does (3 s users here)
    run(train_cli.main, ["--stage", "3", "--config", os.path.join(CONFIG_DIR, "stage3_tiny.yaml"), "--dry-run", "--json",
                         f"data.path={tmp_path / 'kept'}", f"checkpoint.init_from=[{tmp_path}/no-export]",
                         "scaling.num_workers=1", "data.micro_batch_size=1", "data.max_audio_s=2.5"])
    assert json.loads(capsys.readouterr().out)["data"]["splits"]["train"]["examples"] == 0


def _two_sources(tmp_path, info, codec_b: str | None = None):
    """Two token folders for a 3:1 mixture: `big` (8 train, 2 valid rows) and `small` (2 train rows), written by the
    codec of `info` (`small` under the name `codec_b` when given)."""
    from dataclasses import replace

    big = synthetic_token_shards(tmp_path / "big" / "shards", ["train"] * 8 + ["valid"] * 2, prefix="b", codec_info=info)
    small = synthetic_token_shards(tmp_path / "small", ["train"] * 2, prefix="s", codec_info=replace(info, name=codec_b or info.name))
    return f"data.sources=[{{path: {big}, weight: 3}}, {{path: {small}, weight: 1}}]"


def test_dry_run_lists_every_source_with_weight_share_and_epochs(tmp_path, tiny_codec, capsys):
    """Stage 1 (tiny) on two folders 3:1: 40 steps x 2 workers x 4 = 320 samples, 240 from `big` (8 rows: 30 epochs)."""
    import json

    from pipelines.cli import run

    argv = ["--stage", "1", "--config", os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), "--dry-run", _two_sources(tmp_path, tiny_codec.info),
            "max_steps=40", "scaling.num_workers=2", "data.micro_batch_size=4"]
    run(train_cli.main, [*argv, "--json"])
    plan = json.loads(capsys.readouterr().out)
    big, small = plan["data"]["sources"]
    assert (big["name"], big["weight"], big["share"], big["path"]) == ("big", 3.0, 0.75, str(tmp_path / "big" / "shards"))
    assert (small["name"], small["weight"], small["share"]) == ("small", 1.0, 0.25)
    assert big["splits"]["train"]["rows"] == 8 and big["splits"]["valid"]["rows"] == 2 and small["splits"]["train"]["rows"] == 2
    assert big["splits"]["train"]["hours"] == pytest.approx(8 * 2.0 / 3600, abs=1e-6)
    assert big["samples_at_max_steps"] == 240 and big["epochs_at_max_steps"] == 30 and small["epochs_at_max_steps"] == 40
    assert plan["data"]["splits"]["train"]["rows"] == 10  # summed over the sources
    assert sum("repeats" in w for w in plan["warnings"]) == 2, plan["warnings"]
    run(train_cli.main, [*argv, "max_steps=1"])  # 8 samples: `big` never finishes an epoch (6 of its 8 rows)
    text = capsys.readouterr().out
    assert "big never finishes an epoch: 75%" in text, text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["big"], ["small"])]
    assert rows[0][:4] == ["big", "3", "75.0%", "0.75"] and rows[1][:4] == ["small", "1", "25.0%", "1.00"], text


def test_sources_of_different_codecs_stop_before_ray_in_one_line(tmp_path, tiny_codec, capsys):
    import ray

    from pipelines.cli import run

    argv = ["--stage", "1", "--config", os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), _two_sources(tmp_path, tiny_codec.info, codec_b="xy"),
            f"checkpoint.storage_path={tmp_path}/ck"]
    for flags, code in (([], 2), (["--dry-run"], 1)):
        with pytest.raises(SystemExit) as exit_:
            run(train_cli.main, [*argv, *flags])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == code and len(err.splitlines()) == 1, err
        assert "big (" in err and "small (" in err and "codec_name" in err and "vs 'xy'" in err, err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        run(train_cli.main, [*argv[:4], f"data.sources=[{{path: {tmp_path / 'big'}/shards}}, {{path: {tmp_path / 'empty'}}}]", argv[-1]])
    assert f"data.sources empty {tmp_path / 'empty'}: no .parquet files" in capsys.readouterr().err
    assert not ray.is_initialized()
