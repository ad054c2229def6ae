"""Checkpoint layout and helpers (no Ray here; the recipe hands the folder to `ray.train.report`).

One Ray checkpoint folder (`<storage_path>/<run_name>/checkpoint_<time>/`) is the merge of
what every rank wrote into its own temp folder:

    latest                               DeepSpeed: tag of the last save (rank 0)
    step_00000020/                       DeepSpeed tag: module, optimizer and LR-scheduler state
        zero_pp_rank_<r>_mp_rank_00_model_states.pt
        zero_pp_rank_<r>_mp_rank_00_optim_states.pt   (ZeRO: each rank's optimizer partition)
    trainer_state_rank<r>.json           step, reader position (epoch, batches done), world size
    rng_state_rank<r>.pt                 python / numpy / torch RNG states, for exact resume
    model/                               final checkpoint only: the exported model
                                         (VocalNetM2.save_pretrained: safetensors + config + adapter)

The driver copies the final `model/` to `<storage_path>/<run_name>/export`, the stable path
the next stage's `checkpoint.init_from` names.
"""

from __future__ import annotations

import json
import os
import random
import tempfile

import numpy as np
import pyarrow.fs as pafs
import torch

from tokenization import storage

MODEL_DIR = "model"
EXPORT_DIR = "export"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def save_trainer_state(ckpt_dir: str, rank: int, state: dict) -> None:
    """Per-rank JSON state and RNG states, named by rank so the merged folder keeps all of them."""
    with open(os.path.join(ckpt_dir, f"trainer_state_rank{rank}.json"), "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, os.path.join(ckpt_dir, f"rng_state_rank{rank}.pt"))


def load_trainer_state(ckpt_dir: str, rank: int, world_size: int) -> dict:
    """This rank's saved state; restores the RNG states as a side effect.

    Raises:
        ValueError: the checkpoint was written by a different number of ranks (the reader
            positions and ZeRO partitions are per rank).
    """
    path = os.path.join(ckpt_dir, f"trainer_state_rank{rank}.json")
    if not os.path.exists(path):
        raise ValueError(f"{ckpt_dir} has no state for rank {rank}: it was written by a run with fewer workers")
    with open(path) as f:
        state = json.load(f)
    if state.get("world_size", world_size) != world_size:
        raise ValueError(f"{ckpt_dir} was written by {state['world_size']} ranks, this run has {world_size}")
    rng = torch.load(os.path.join(ckpt_dir, f"rng_state_rank{rank}.pt"), weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def localize(uri: str) -> str:
    """A local folder with the contents of `uri` (copied to a temp folder when it is s3://)."""
    if not uri.startswith("s3://"):
        return uri
    src_fs, src = storage.filesystem(uri)
    local = tempfile.mkdtemp(prefix="init_from_")
    pafs.copy_files(src, local, source_filesystem=src_fs, destination_filesystem=pafs.LocalFileSystem())
    return local


def model_dir_of(path: str) -> str:
    """An exported model folder from either the export itself or a Ray checkpoint holding `model/`."""
    inner = storage.join(path, MODEL_DIR)
    return inner if storage.exists(inner) else path


def copy_tree(src_fs: pafs.FileSystem, src_path: str, dst_uri: str) -> None:
    """Copy a folder (any pyarrow filesystem) to a local path or s3:// URI, replacing what is there."""
    dst_fs, dst = storage.filesystem(dst_uri)
    if dst_fs.get_file_info(dst).type != pafs.FileType.NotFound:
        dst_fs.delete_dir(dst)
    dst_fs.create_dir(dst, recursive=True)
    pafs.copy_files(src_path, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)


def is_remote_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def shared_storage_problem(storage_path: str, node_views: dict[str, bool], marker: str) -> str | None:
    """Why `storage_path` cannot hold a multi-node run's checkpoints, or None if it can.

    Args:
        storage_path: RunConfig storage path.
        node_views: node id -> whether that node sees `marker`, a file the driver just wrote
            under `storage_path` (only needed for local paths).
        marker: the marker's path, for the message.
    """
    if len(node_views) <= 1 or is_remote_uri(storage_path):
        return None
    blind = sorted(n for n, sees in node_views.items() if not sees)
    if not blind:
        return None
    return (
        f"checkpoint.storage_path={storage_path!r} is node-local: {len(blind)} of {len(node_views)} nodes "
        f"(e.g. {blind[0][:12]}) do not see {marker}. A multi-node run needs storage every node shares: "
        f"an s3:// URI or a shared filesystem (NFS, EFS, Lustre) mounted at the same path on every node."
    )
