"""Experiments: one base stage config trained under a grid (or a list) of overrides, a trial per point.

An experiment YAML (`experiments/*.yaml`, run by `python -m pipelines.experiment --config ...`) names a base
stage YAML, overrides for every trial, the points (`grid`: the product of each key's values, or `trials`: a list
of {key: value}), the resources per trial, what to evaluate after each trial and what to plot. Keys are the
dotted keys `pipelines.train` takes (`model.talker.n_mtp`, `data.sources[0].max_wer`).

    >>> exp = load_experiment("experiments/mtp_depth.yaml")
    >>> [t.label for t in expand(exp)][:2]
    ['model.talker.n_mtp=0', 'model.talker.n_mtp=1']
    >>> cfg = trial_config(exp, expand(exp)[0], "out/experiments/mtp_depth")   # a StageConfig, strictly checked
    >>> config_hash(cfg)                                                     # its folder's name
    '3f2a...'

A trial's folder is named by the hash of its resolved stage config (what it trains, not where it writes), so
a rerun finds the trials it already finished; each trial leaves `result.json` there (`trial_result`), and
`results.jsonl` is the rows of every trial folder of the experiment. No Ray here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from tokenization import storage
from tokenization.strict_config import ConfigError, config_error, load_dataclass, read_yaml_mapping
from training import checkpointing as ckpt
from training.metrics import read_jsonl
from training.stage_config import StageConfig, load_config

TRIALS_DIR = "trials"  # OUT/trials/<config hash>/: the trial's Ray Train run (checkpoints, tensorboard, export)
RESULT = "result.json"  # OUT/trials/<hash>/result.json: the trial's row, written when it finished
EVAL_DIR = "eval"  # OUT/trials/<hash>/eval/: pipelines.evaluate's eval.json, eval.md, eval.html
DONE, FAILED = "done", "failed"
# where a trial writes, not what it trains: left out of the config hash
PLACE_KEYS = ("checkpoint.storage_path", "checkpoint.run_name", "tensorboard_dir", "config_dir")
EVAL_HEADLINE = ("wer", "first_chunk_latency_s", "rtf", "talker_forwards_per_reply", "frames_per_forward", "text_acc",
                 "speech_acc", "mtp_acc", "codebook_acc")


@dataclass
class EvaluateConfig:
    """`pipelines.evaluate` after each trial, on its exported model (flags of the same names)."""

    data: str = ""  # shards to evaluate on ("": the trial's first data source; with max_wer, its kept/)
    split: str = "valid"
    max_dialogues: int = 4
    max_frames: int = 60
    max_text_tokens: int = 24
    reply: str = "generate"  # generate | reference
    asr: str = "tiny.en"
    codec: str = "tiny"

    def flags(self) -> list[str]:
        return ["--split", self.split, "--max-dialogues", str(self.max_dialogues), "--max-frames", str(self.max_frames),
                "--max-text-tokens", str(self.max_text_tokens), "--reply", self.reply, "--asr", self.asr, "--codec", self.codec]


@dataclass
class PlotConfig:
    x: str = ""  # the key on the x axis ("": the first grid/trials key)
    y: list[str] = field(default_factory=lambda: ["val_loss"])  # result keys, one panel each (e.g. eval.talker_forwards_per_reply)


@dataclass
class SampleConfig:
    """The bundled sample, built as `pipelines.demo` builds it, when the trials read it and it is missing."""

    output: str = ""  # the demo's --output (e.g. out/demo); "" when the trials read other data
    tokenize_only: bool = True  # token shards are enough (stage 1); false: the whole demo (filter output, stage exports)


@dataclass
class ExperimentConfig:
    name: str = ""
    description: str = ""
    base: str = ""  # the stage YAML every trial starts from (relative paths start where the command runs)
    stage: int = 1
    overrides: list[str] = field(default_factory=list)  # key=value for every trial (before the trial's own)
    grid: dict[str, list] = field(default_factory=dict)  # key -> values: a trial per combination
    trials: list[dict] = field(default_factory=list)  # or explicit points, each {key: value}
    resources: dict[str, Any] = field(default_factory=dict)  # scaling.* of every trial (num_workers, cpus_per_worker, use_gpu, ...)
    max_concurrent_trials: int = 0  # 0: the cluster's resources / one trial's
    evaluate: EvaluateConfig | None = None  # None: no evaluation after a trial
    plot: PlotConfig = field(default_factory=PlotConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    output: str = ""  # default OUT of --output: out/experiments/<name>
    source: str = field(default="", init=False)  # the YAML file, for messages


@dataclass
class Trial:
    """One point: its own overrides (on top of the experiment's) and a label naming them."""

    index: int
    overrides: dict[str, Any]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={yaml_value(v)}" for k, v in self.overrides.items())

    def args(self) -> list[str]:
        return [f"{k}={yaml_value(v)}" for k, v in self.overrides.items()]


def yaml_value(v: Any) -> str:
    """A value as the YAML text of a `key=value` override (`.inf` for infinity, JSON otherwise, which YAML reads)."""
    if isinstance(v, float) and math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(", ", ": "))


def local_abs(path: str) -> str:
    """A local path made absolute (relative paths start where the command runs, as for `pipelines.train`)."""
    return path if not path or ckpt.is_remote_uri(path) else os.path.abspath(path)


def load_experiment(path: str) -> ExperimentConfig:
    """Load an experiment YAML strictly (unknown keys name key and file); ConfigError on any mistake."""
    d = read_yaml_mapping(path, "experiment keys")
    exp = load_dataclass(ExperimentConfig, d, where=path)
    exp.source = path
    exp.name = exp.name or os.path.splitext(os.path.basename(path))[0]
    if not exp.base:
        raise config_error(path, "base", "missing: the stage YAML every trial starts from (e.g. training/configs/stage1_tiny.yaml)")
    if exp.grid and exp.trials:
        raise config_error(path, "trials", "give grid (a product of values) or trials (a list of points), not both")
    for key, values in exp.grid.items():
        if not isinstance(values, list) or not values:
            raise config_error(path, f"grid.{key}", "must be a non-empty list of values")
    for i, t in enumerate(exp.trials):
        if not isinstance(t, dict) or not t:
            raise config_error(path, f"trials[{i}]", "must be a mapping of key: value")
    if exp.max_concurrent_trials < 0:
        raise config_error(path, "max_concurrent_trials", f"{exp.max_concurrent_trials} must be >= 0 (0: from the cluster)")
    if exp.evaluate and exp.evaluate.data:  # here, on the driver: a trial runs in Tune's own working folder
        exp.evaluate.data = local_abs(exp.evaluate.data)
    return exp


def expand(exp: ExperimentConfig) -> list[Trial]:
    """The experiment's points, in YAML order (a grid: the last key varies fastest); one empty point without either."""
    if exp.trials:
        return [Trial(i, dict(t)) for i, t in enumerate(exp.trials)]
    keys = list(exp.grid)
    return [Trial(i, dict(zip(keys, combo))) for i, combo in enumerate(itertools.product(*(exp.grid[k] for k in keys)))]


def trial_config(exp: ExperimentConfig, trial: Trial, out: str) -> StageConfig:
    """The trial's stage config: base YAML + experiment overrides + resources + the trial's own, checked strictly.

    Writes go under `<out>/trials/<hash>` (`checkpoint.run_name` is the config hash). A bad key or value is a
    ConfigError naming the experiment file, the trial and the key.
    """
    base = local_abs(exp.base)
    args = [*exp.overrides, *(f"scaling.{k}={yaml_value(v)}" for k, v in exp.resources.items()), *trial.args()]
    try:
        cfg = load_config(base, args, stage=exp.stage)
    except ConfigError as exc:
        raise ConfigError(f"{exp.source}: trial {trial.index} ({trial.label or 'base'}): {exc}") from None
    cfg.data.path = local_abs(cfg.data.path)
    for source in cfg.data.sources:
        source.path = local_abs(source.path)
    cfg.checkpoint.init_from = [local_abs(p) for p in cfg.checkpoint.init_from]
    h = config_hash(cfg)
    cfg.checkpoint.storage_path = os.path.join(os.path.abspath(out), TRIALS_DIR)
    cfg.checkpoint.run_name = h
    cfg.tensorboard_dir = os.path.join(cfg.checkpoint.storage_path, h, "tensorboard")
    return cfg


def config_hash(cfg: StageConfig) -> str:
    """12 hex digits of sha1 over what the trial trains (every resolved key but where it writes)."""
    d = cfg.to_dict()
    for key in PLACE_KEYS:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    d.pop("source", None)
    d.pop("notes", None)
    d["deepspeed"] = cfg.deepspeed_config()  # the JSON's content, not its file name
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trial_folder(out: str, h: str) -> str:
    return os.path.join(os.path.abspath(out), TRIALS_DIR, h)


def finished(out: str, h: str) -> dict | None:
    """The stored row of a trial that finished (`result.json` with status done), else None."""
    path = os.path.join(trial_folder(out, h), RESULT)
    if not os.path.isfile(path):
        return None
    row = json.loads(storage.read_text(path))
    return row if row.get("status") == DONE else None


def tokens_seen(rows: list[dict], examples_per_step: int) -> float:
    """Target tokens trained on, from the logged windows: tokens per sample x samples per window, summed."""
    total, prev = 0.0, 0
    for r in rows:
        if r.get("samples_per_s"):
            total += r["tokens_per_s"] / r["samples_per_s"] * (r["step"] - prev) * examples_per_step
        prev = r["step"]
    return total


def trial_result(cfg: StageConfig, trial: Trial, h: str, metrics: dict, started: float, ended: float,
                 evaluation: dict | None, status: str = DONE, error: str = "") -> dict:
    """A trial's row of `results.jsonl` from its final metrics and what the recipe logged (metrics.jsonl)."""
    logged = {r["step"]: r for r in read_jsonl(cfg.tensorboard_dir)} if os.path.isdir(cfg.tensorboard_dir) else {}
    rows = [logged[s] for s in sorted(logged)]
    per_step = cfg.data.micro_batch_size * cfg.optim.grad_accum * cfg.scaling.num_workers
    final = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    first_step_at = next((r["wall_time"] for r in rows if "wall_time" in r), None)
    row = {
        "trial": trial.label, "index": trial.index, "config_hash": h, "overrides": trial.overrides, "status": status,
        "train_loss": final.get("loss"),
        "val_loss": final.get("val_loss"),
        "losses": {k: v for k, v in final.items() if k.startswith(("loss/", "val_loss/"))},
        "rows": {k: v for k, v in final.items() if k.startswith("rows/")},
        "steps": int(final.get("step", 0)),
        "tokens_seen": round(tokens_seen(rows, per_step)),
        "tokens_per_s": _mean([r["tokens_per_s"] for r in rows[1:] or rows if "tokens_per_s" in r]),
        "wall_s": round(ended - started, 2),
        "trial_startup_s": None if first_step_at is None else round(first_step_at - started, 2),
        "eval": None if evaluation is None else {k: evaluation.get(k) for k in EVAL_HEADLINE},
        "eval_loss": None if evaluation is None else evaluation.get("loss"),
        "folder": os.path.join(cfg.checkpoint.storage_path, h),
    }
    if error:
        row["error"] = error
    return json_safe(row)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def json_safe(x: Any) -> Any:
    """Infinite and NaN floats as strings ("inf"), so every row is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def value_at(row: dict, key: str) -> Any:
    """A result row's value by dotted key (`val_loss`, `eval.talker_forwards_per_reply`), or an override's."""
    if key in row.get("overrides", {}):
        return row["overrides"][key]
    node: Any = row
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return node.get(key) if isinstance(node, dict) and key in node else None
        node = node[part]
    return node


def eval_data(exp: ExperimentConfig, cfg: StageConfig) -> str:
    """What `pipelines.evaluate` reads after a trial: `evaluate.data`, else the trial's first source (its kept/ with max_wer)."""
    from training.data.selection import source_folders

    if exp.evaluate and exp.evaluate.data:
        return local_abs(exp.evaluate.data)
    first = cfg.data.mixture()[0]
    return source_folders(first.path, first.max_wer)[0]
