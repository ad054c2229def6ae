"""Run the stage recipe without Ray: under plain `torchrun`, or in-process (one rank, unit tests).

    torchrun --nproc_per_node=2 -m pipelines.train --stage 1 --config training/configs/stage1_tiny.yaml --torchrun

Checkpoints go to `<storage_path>/<run_name>/checkpoint_<step>` (a local or shared folder:
every rank copies its own files in, as Ray Train merges them), the last `num_to_keep` are
kept, and a rerun resumes from the newest one. The final model is copied to
`<storage_path>/<run_name>/export`, the same place the Ray launcher uses, so `init_from`
works across launchers. Worker failures are not retried here (that is what Ray Train adds).
"""

from __future__ import annotations

import logging
import os
import shutil

import torch
import torch.distributed as dist

from tokenization.errors import UserError
from training import checkpointing as ckpt
from training.metrics import format_progress
from training.recipe import StageRecipe, WorkerContext, run_worker
from training.stage_config import StageConfig

log = logging.getLogger(__name__)
PREFIX = "checkpoint_"
COMPLETE = ".complete"  # suffix of the marker file beside a finished checkpoint folder


def require_local_storage(cfg: StageConfig) -> None:
    """The torchrun launcher writes checkpoints with plain file I/O: object storage is the user's mistake to fix.

    Raises:
        UserError: `checkpoint.storage_path` is a remote URI (e.g. `s3://`), naming the YAML file.
    """
    if ckpt.is_remote_uri(cfg.checkpoint.storage_path):
        raise UserError(f"{cfg.source}: checkpoint.storage_path {cfg.checkpoint.storage_path}: --torchrun writes checkpoints "
                        "to a local or shared folder; use Ray Train (no --torchrun) for object storage")


def run_dir(cfg: StageConfig) -> str:
    require_local_storage(cfg)
    return os.path.join(os.path.abspath(cfg.checkpoint.storage_path), cfg.checkpoint.run_name)


def checkpoints(folder: str) -> list[str]:
    """The `checkpoint_<step>` folder names under `folder`, oldest first (finished or not)."""
    if not os.path.isdir(folder):
        return []
    return sorted(d for d in os.listdir(folder) if d.startswith(PREFIX) and os.path.isdir(os.path.join(folder, d)))


def latest_checkpoint(folder: str) -> str | None:
    """The newest complete `checkpoint_<step>` under `folder` (one with a `<name>.complete` marker beside it:
    the marker stays outside the checkpoint, whose every file its checksum manifest must list)."""
    done = [d for d in checkpoints(folder) if os.path.exists(os.path.join(folder, d + COMPLETE))]
    return os.path.join(folder, done[-1]) if done else None


class FolderReporter:
    """`WorkerContext.report` for torchrun: rank 0 prints progress; checkpoints are copied to `folder`."""

    def __init__(self, cfg: StageConfig, rank: int, echo: bool = True):
        self.cfg, self.rank, self.echo = cfg, rank, echo
        self.folder = run_dir(cfg)
        self.reports: list[dict] = []  # rank 0's metrics, in order (what Ray's Result.metrics would hold last)
        self.last_checkpoint: str | None = None

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if self.rank == 0:
            self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            self.last_checkpoint = self._keep(checkpoint_dir, int(metrics["step"]))
        if self.rank == 0 and self.echo:
            line = format_progress(self.cfg.stage, self.cfg.max_steps, metrics)
            print(line + (" | checkpoint saved" if checkpoint_dir else ""), flush=True)

    def _keep(self, src: str, step: int) -> str:
        dst = os.path.join(self.folder, f"{PREFIX}{step:09d}")
        shutil.copytree(src, dst, dirs_exist_ok=True)  # ranks write disjoint files (DeepSpeed names them by rank)
        _barrier()
        if self.rank == 0:
            open(dst + COMPLETE, "w").close()
            for old in checkpoints(self.folder)[:-self.cfg.checkpoint.num_to_keep]:
                shutil.rmtree(os.path.join(self.folder, old), ignore_errors=True)
                if os.path.exists(os.path.join(self.folder, old + COMPLETE)):
                    os.remove(os.path.join(self.folder, old + COMPLETE))
        _barrier()
        return dst


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def init_process_group(use_gpu: bool) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; a 1-rank group when run directly."""
    import deepspeed

    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")
    local = int(os.environ["LOCAL_RANK"])
    if use_gpu:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if use_gpu else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def close_process_group() -> None:
    """Tear the group down through DeepSpeed's comm, which also drops the groups DeepSpeed cached: after a
    plain `torch.distributed.destroy_process_group` the next `run_local` in this process (tests) would hand
    DeepSpeed a stale group ("Group ... is not registered")."""
    if dist.is_available() and dist.is_initialized():
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()


def run_local(cfg: StageConfig, echo: bool = True) -> tuple[StageRecipe, FolderReporter, str | None]:
    """Train one stage on this process group; returns (recipe, reporter with the metrics, export folder)."""
    rank, world, device = init_process_group(cfg.scaling.use_gpu)
    reporter = FolderReporter(cfg, rank, echo)
    resume = latest_checkpoint(reporter.folder)
    if resume:
        log.info("resuming from %s", resume)
    ctx = WorkerContext(rank, world, device, reporter, node_id=os.uname().nodename)
    recipe = run_worker(cfg, cfg.deepspeed_config(), ctx, resume)
    export = None
    model = os.path.join(reporter.last_checkpoint or "", ckpt.MODEL_DIR)
    if rank == 0 and reporter.last_checkpoint and os.path.isdir(model):
        export = os.path.join(reporter.folder, ckpt.EXPORT_DIR)
        shutil.copytree(model, export, dirs_exist_ok=True)
    _barrier()
    return recipe, reporter, export
