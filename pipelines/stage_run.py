"""Running one stage under Ray Train, shared by `pipelines.train` (one stage) and `pipelines.experiment` (a stage per
Ray Tune trial): the checks before Ray, the TorchTrainer with its DeepSpeed JSON, the worker loop, the export.

    cfg = resolve_paths(load_config(path, overrides))       # absolute paths; inputs and sources checked, before Ray
    result = build_trainer(cfg, callbacks=[...]).fit()      # Ray Train v2: workers, resources, storage, retries
    export = export_final(result, cfg)                      # <storage_path>/<run_name>/export

The only module that knows TorchTrainer, ScalingConfig and the DeepSpeed JSON path; no entry point of its own
(entry points never import each other).
"""

from __future__ import annotations

import logging
import os
import uuid

from pipelines.logs import terminal_line
from tokenization import storage
from tokenization.errors import UserError
from training import checkpointing as ckpt
from training.metrics import format_progress
from training.stage_config import StageConfig, resolve_init_model

log = logging.getLogger(__name__)

# CPU workers: DeepSpeed's CPU accelerator over gloo. Set here for the driver and passed to workers.
CPU_ENV = {"DS_ACCELERATOR": "cpu"}


def worker_env(cfg: StageConfig) -> dict:
    env = {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_V2_ENABLED": "1"}
    # S3 endpoint and region, never credentials: those come from each node's own environment or
    # instance role, so no secret sits in the job's runtime env (which Ray shows in its dashboard).
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        if key in os.environ:
            env[key] = os.environ[key]
    return {**env, **({} if cfg.scaling.use_gpu else CPU_ENV)}


def check_shared_storage(storage_path: str) -> None:
    """Fail before training when a multi-node cluster would checkpoint to node-local storage.

    Writes a marker under `storage_path` and asks one task per alive node whether it sees it.
    """
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) <= 1 or ckpt.is_remote_uri(storage_path):
        return
    marker = os.path.join(os.path.abspath(storage_path), f".shared_check_{uuid.uuid4().hex}")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    open(marker, "w").close()
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0)
        def sees(path: str) -> bool:
            return os.path.exists(path)

        refs = {n["NodeID"]: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(marker)
                for n in nodes}
        views = {node: ray.get(ref, timeout=120) for node, ref in refs.items()}
    finally:
        os.remove(marker)
    problem = ckpt.shared_storage_problem(storage_path, views, marker)
    if problem:
        raise UserError(problem)


def make_progress_callback(cfg: StageConfig):
    from ray.train import UserCallback

    class Progress(UserCallback):
        """Prints rank 0's metrics on the driver's terminal at every checkpoint report (this runs in Ray Train's
        controller actor; the steps between are printed by rank 0, see `train_loop_per_worker`)."""

        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metrics[0]:
                line = format_progress(cfg.stage, cfg.max_steps, metrics[0])
                terminal_line(line + (" | checkpoint saved" if checkpoint else ""))

    return Progress()


def run_storage(storage_path: str):
    """(storage_path, storage_filesystem) for RunConfig.

    s3:// gets our own S3 filesystem (endpoint and region from the AWS_* variables, see
    `tokenization.storage`): Ray would otherwise build one with `FileSystem.from_uri`, which
    ignores AWS_ENDPOINT_URL in some pyarrow versions, so checkpoints would go to AWS instead of
    the S3-compatible store the data is in. Other URIs go to Ray as they are; local paths become
    absolute.
    """
    if storage_path.startswith("s3://"):
        fs, path = storage.filesystem(storage_path)
        return path, fs
    if ckpt.is_remote_uri(storage_path):
        return storage_path, None
    return os.path.abspath(storage_path), None


def build_trainer(cfg: StageConfig, callbacks: list | None = None):
    """TorchTrainer for one stage: workers, resources, storage, retention, retries; `callbacks` (Ray Train
    `UserCallback`s, e.g. Tune's `TuneReportCallback`) run beside the progress line."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s, c = cfg.scaling, cfg.checkpoint
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    storage_path, storage_fs = run_storage(c.storage_path)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"stage": cfg, "deepspeed": cfg.deepspeed_config()},
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources,
                                     placement_strategy=s.placement_strategy),
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        run_config=RunConfig(
            name=c.run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=c.num_to_keep),
            failure_config=FailureConfig(max_failures=c.max_failures),
            worker_runtime_env={"env_vars": worker_env(cfg)},
            callbacks=[make_progress_callback(cfg), *(callbacks or [])],
            logging_config=LoggingConfig(log_level="WARNING"),  # our progress line replaces per-report logs
        ),
    )


def export_final(result, cfg: StageConfig) -> str | None:
    """Copy the final checkpoint's `model/` to `<storage_path>/<run_name>/export`; returns that URI."""
    if result.checkpoint is None:
        return None
    fs, path = result.checkpoint.filesystem, result.checkpoint.path
    src = f"{path}/{ckpt.MODEL_DIR}"
    import pyarrow.fs as pafs

    if fs.get_file_info(src).type == pafs.FileType.NotFound:
        log.warning("final checkpoint %s holds no exported model", path)
        return None
    dst = storage.join(cfg.checkpoint.storage_path if ckpt.is_remote_uri(cfg.checkpoint.storage_path)
                       else os.path.abspath(cfg.checkpoint.storage_path), cfg.checkpoint.run_name, ckpt.EXPORT_DIR)
    ckpt.copy_tree(fs, src, dst)
    return dst


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's worker entry: the recipe with Ray's report/checkpoint/context wired in."""
    import ray
    import ray.train
    import ray.train.torch

    from training.recipe import WorkerContext, run_worker

    cfg = config["stage"]
    rt = ray.train.get_context()

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        # Ray Train holds one pending report per worker and collects it at the controller's poll
        # (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s), so a metrics-only `ray.train.report` at every
        # logged step would cap training at one step per poll. Those lines are printed by rank 0
        # here (TensorBoard has them too); Ray gets the checkpoints, with their metrics.
        if checkpoint_dir is None:
            if rt.get_world_rank() == 0:
                terminal_line(format_progress(cfg.stage, cfg.max_steps, metrics))
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir))

    ctx = WorkerContext(rt.get_world_rank(), rt.get_world_size(), ray.train.torch.get_device(), report,
                        node_id=ray.get_runtime_context().get_node_id())
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            run_worker(config["stage"], config["deepspeed"], ctx, d)
    else:
        run_worker(config["stage"], config["deepspeed"], ctx)


def resolve_paths(cfg: StageConfig) -> StageConfig:
    """Make local paths absolute (workers run in other folders) and fail fast, before Ray, on missing inputs
    and on data sources that do not agree (another codec, a dialogue folder in stage 1)."""
    from training.data.row_groups import list_row_groups
    from training.data.selection import source_folders
    from training.data.sources import check_sources

    def local_abs(p: str) -> str:
        return p if ckpt.is_remote_uri(p) or not p else os.path.abspath(p)

    cfg.data.path = local_abs(cfg.data.path)
    for source in cfg.data.sources:
        source.path = local_abs(source.path)
    cfg.checkpoint.storage_path = local_abs(cfg.checkpoint.storage_path)
    cfg.checkpoint.init_from = [local_abs(p) for p in cfg.checkpoint.init_from]
    cfg.tensorboard_dir = local_abs(cfg.tensorboard_dir)
    if os.path.exists(cfg.tokenizer):
        cfg.tokenizer = os.path.abspath(cfg.tokenizer)
    mixture = cfg.data.mixture()
    for source in mixture:
        what = f"data.sources {source.name}" if cfg.data.sources else "data.path"
        for folder in source_folders(source.path, source.max_wer):  # with max_wer: the filter output's kept/ + rejects/
            list_row_groups(folder, what=what)  # UserError: no shards there, or a file that is not Parquet (footers only)
    check_sources(cfg.stage, [(s.name, source_folders(s.path, s.max_wer)[0]) for s in mixture])
    for p in cfg.checkpoint.init_from:
        if not storage.exists(p):
            raise UserError(f"{cfg.source}: checkpoint.init_from: {p} does not exist (train the previous stage first)")
    problem = resolve_init_model(cfg)  # sizes known on the driver (checks, dry run); workers load the export itself
    if problem:
        raise UserError(f"{cfg.source}: {problem}")
    return cfg
