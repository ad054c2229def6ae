"""Checkpoint layout and helpers (no Ray here; the recipe hands the folder to `ray.train.report`).

One Ray checkpoint folder (`<storage_path>/<run_name>/checkpoint_<time>/`) is the merge of
what every rank wrote into its own temp folder:

    latest                               DeepSpeed: tag of the last save (rank 0)
    step_00000020/                       DeepSpeed tag: module, optimizer and LR-scheduler state
        zero_pp_rank_<r>_mp_rank_00_model_states.pt
        zero_pp_rank_<r>_mp_rank_00_optim_states.pt   (ZeRO: each rank's optimizer partition)
    trainer_state_rank<r>.json           step, world size, reader position per data source (epoch, batches
                                         done, carried examples) + mixture credits and rows drawn
    rng_state_rank<r>.safetensors        python / numpy / torch (/ cuda) RNG states, for exact resume
    checksums_rank<r>.json               sha256 of every file rank r wrote (+ HMAC when a key is set):
                                         verified before DeepSpeed unpickles its `*.pt` files
    model/                               final checkpoint only: the exported model
                                         (VocalNetM2.save_pretrained: safetensors + config + adapter)

The driver copies the final `model/` to `<storage_path>/<run_name>/export`, the stable path
the next stage's `checkpoint.init_from` names.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import tempfile

import numpy as np
import pyarrow.fs as pafs
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy

from tokenization import storage

MODEL_DIR = "model"
EXPORT_DIR = "export"
MANIFEST_PREFIX = "checksums_rank"
KEY_ENV = "VOCALNET_CHECKPOINT_KEY"  # HMAC key for checkpoint manifests; the same on every node


class CheckpointIntegrityError(ValueError):
    """A checkpoint folder whose files do not match the checksums (or signature) recorded at save."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def save_trainer_state(ckpt_dir: str, rank: int, state: dict) -> None:
    """Per-rank JSON state and RNG states, named by rank so the merged folder keeps all of them.

    RNG states go to safetensors (arrays) with their scalars in its metadata: nothing here is
    pickled, so loading them runs no code whatever the folder holds.
    """
    with open(os.path.join(ckpt_dir, f"trainer_state_rank{rank}.json"), "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    arrays = {
        "python": np.asarray(mt, dtype=np.int64),
        "numpy": np.asarray(np_keys, dtype=np.uint32),
        "torch": torch.get_rng_state().numpy(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            arrays[f"cuda_{i}"] = s.cpu().numpy()
    scalars = {"python_version": version, "python_gauss": gauss, "numpy_name": np_name, "numpy_pos": int(np_pos),
               "numpy_has_gauss": int(np_has_gauss), "numpy_gauss": float(np_gauss)}
    save_numpy(arrays, os.path.join(ckpt_dir, _rng_file(rank)), metadata={"scalars": json.dumps(scalars)})


def load_trainer_state(ckpt_dir: str, rank: int, world_size: int) -> dict:
    """This rank's saved state; restores the RNG states as a side effect.

    Raises:
        ValueError: the checkpoint was written by a different number of ranks (the reader
            positions and ZeRO partitions are per rank), or by a version that pickled its RNG.
    """
    path = os.path.join(ckpt_dir, f"trainer_state_rank{rank}.json")
    if not os.path.exists(path):
        raise ValueError(f"{ckpt_dir} has no state for rank {rank}: it was written by a run with fewer workers")
    with open(path) as f:
        state = json.load(f)
    if state.get("world_size", world_size) != world_size:
        raise ValueError(f"{ckpt_dir} was written by {state['world_size']} ranks, this run has {world_size}")
    rng_path = os.path.join(ckpt_dir, _rng_file(rank))
    if not os.path.exists(rng_path):
        raise ValueError(f"{rng_path} is missing (a checkpoint from a version that pickled RNG states is not "
                         "loaded: start from its exported model with checkpoint.init_from instead)")
    with safe_open(rng_path, framework="numpy") as f:
        scalars = json.loads(f.metadata()["scalars"])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    random.setstate((scalars["python_version"], tuple(int(x) for x in arrays["python"]), scalars["python_gauss"]))
    np.random.set_state((scalars["numpy_name"], arrays["numpy"], scalars["numpy_pos"],
                         scalars["numpy_has_gauss"], scalars["numpy_gauss"]))
    torch.set_rng_state(torch.from_numpy(arrays["torch"]))
    cuda = [torch.from_numpy(arrays[k]) for k in sorted((k for k in arrays if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return state


def _rng_file(rank: int) -> str:
    return f"rng_state_rank{rank}.safetensors"


# ---- integrity: checksums recorded at save, verified before anything unpickles ---------------
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_under(root: str) -> list[str]:
    """Every regular file below `root`, as sorted '/'-joined relative paths (symlinks included)."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            out.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(out)


def _signature(key: bytes, rank: int, files: dict[str, str]) -> str:
    body = json.dumps({"rank": rank, "files": files}, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _key() -> bytes | None:
    key = os.environ.get(KEY_ENV, "")
    return key.encode() if key else None


def _is_manifest(rel: str) -> bool:
    return "/" not in rel and rel.startswith(MANIFEST_PREFIX) and rel.endswith(".json")


def seal_checkpoint(ckpt_dir: str, rank: int) -> str:
    """Record the sha256 of every file this rank wrote into `ckpt_dir` (call after all writes).

    Writes `checksums_rank<r>.json`; with `VOCALNET_CHECKPOINT_KEY` set the manifest carries an
    HMAC-SHA256 over the file list, so whoever lacks the key cannot forge it.

    Returns:
        The manifest's path.
    """
    files = {rel: _sha256(os.path.join(ckpt_dir, rel)) for rel in _files_under(ckpt_dir) if not _is_manifest(rel)}
    manifest: dict = {"version": 1, "rank": rank, "files": files}
    key = _key()
    if key:
        manifest["hmac_sha256"] = _signature(key, rank, files)
    path = os.path.join(ckpt_dir, f"{MANIFEST_PREFIX}{rank}.json")
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return path


def verify_checkpoint(ckpt_dir: str) -> None:
    """Refuse a checkpoint folder whose files differ from what its writers recorded.

    Runs before DeepSpeed's `load_checkpoint`, which unpickles its `*.pt` files: every file in
    the folder must be listed in a `checksums_rank*.json` manifest with a matching sha256, and
    when `VOCALNET_CHECKPOINT_KEY` is set every manifest must carry a valid HMAC under it.
    Without a key this catches corruption and a swapped file, not a writer who also rewrites
    the manifest (see the README's trust boundary).

    Raises:
        CheckpointIntegrityError: naming the file and what is wrong with it.
    """
    present = _files_under(ckpt_dir)
    manifests = [rel for rel in present if _is_manifest(rel)]
    if not manifests:
        raise CheckpointIntegrityError(
            f"{ckpt_dir} has no {MANIFEST_PREFIX}<rank>.json: refusing to load a checkpoint whose files cannot be "
            "verified (DeepSpeed unpickles them). Resume only from checkpoints this project wrote."
        )
    key = _key()
    expected: dict[str, set[str]] = {}  # a name two ranks wrote (Ray keeps one copy) may carry two digests
    for rel in manifests:
        path = os.path.join(ckpt_dir, rel)
        try:
            with open(path) as f:
                manifest = json.load(f)
            rank, files = int(manifest["rank"]), dict(manifest["files"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointIntegrityError(f"{path} is not a checksum manifest ({e})") from None
        if key:
            sig = manifest.get("hmac_sha256")
            if not isinstance(sig, str) or not hmac.compare_digest(sig, _signature(key, rank, files)):
                raise CheckpointIntegrityError(
                    f"{path}: HMAC signature {'missing' if sig is None else 'does not match'} under {KEY_ENV}: "
                    "the checkpoint was not written with this key, or was altered; refusing to load it"
                )
        for name, digest in files.items():
            expected.setdefault(name, set()).add(digest)
    for rel in present:
        if _is_manifest(rel):
            continue
        path = os.path.join(ckpt_dir, rel)
        if rel not in expected:
            raise CheckpointIntegrityError(f"{path} is not listed in any checksum manifest: refusing to load the checkpoint")
        if _sha256(path) not in expected[rel]:
            raise CheckpointIntegrityError(f"{path} does not match its sha256 recorded at save time: refusing to load the checkpoint")
    missing = sorted(set(expected) - set(present))
    if missing:
        raise CheckpointIntegrityError(f"{os.path.join(ckpt_dir, missing[0])} is listed in the checksum manifest but missing")


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
