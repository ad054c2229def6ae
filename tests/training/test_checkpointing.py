"""Checkpoint integrity: nothing we write is pickled, and nothing is unpickled before its checksum is verified.

A real DeepSpeed engine (ZeRO-2, one CPU rank) saves through the recipe's path; the crafted
folders then carry a pickle whose unpickling would create a marker file, so a test that let
DeepSpeed load it would see the marker.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import types

import numpy as np
import pytest
import torch

from training import checkpointing as ckpt
from training.recipe import StageRecipe

REPO = pathlib.Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this creates `path`: the harmless stand-in for code run from a checkpoint."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def engine():
    import deepspeed

    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(29500 + os.getpid() % 1000)})
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    eng, _, _, _ = deepspeed.initialize(
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
        config={"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}},
    )
    loss = eng(torch.ones(1, 4)).sum()
    eng.backward(loss)
    eng.step()
    return eng


def _save(engine, d: str, step: int = 3) -> str:
    """What `StageRecipe.save_checkpoint` writes for one rank."""
    engine.save_checkpoint(d, tag=ckpt.tag_for(step))
    ckpt.save_trainer_state(d, 0, {"step": step, "stream": {}, "world_size": 1, "stage": 1})
    ckpt.seal_checkpoint(d, 0)
    return d


def _load(engine, d: str) -> dict:
    """The recipe's own resume path (verify, DeepSpeed load, trainer state) on a one-rank stand-in."""
    loaded = {}
    me = types.SimpleNamespace(engine=engine, rank=0, world_size=1, step=0,
                               stream=types.SimpleNamespace(load_state_dict=loaded.update))
    StageRecipe.load_checkpoint(me, d)
    return {"step": me.step}


def _optim_file(d: str, step: int = 3) -> str:
    tag = os.path.join(d, ckpt.tag_for(step))
    (name,) = [f for f in os.listdir(tag) if f.endswith("optim_states.pt")]
    return os.path.join(tag, name)


def test_sealed_checkpoint_resumes_and_restores_rng_exactly(engine, tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.KEY_ENV, raising=False)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    d = _save(engine, str(tmp_path / "c"))
    expect = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert _load(engine, d) == {"step": 3}
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[:2] == expect[:2] and torch.equal(got[2], expect[2])
    # everything the project itself wrote is JSON or safetensors; only DeepSpeed's *.pt are pickles
    ours = [f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)) and f != "latest" and not f.startswith("zero_to_")]
    assert ours and all(f.endswith((".json", ".safetensors")) for f in ours), ours
    manifest = json.load(open(os.path.join(d, "checksums_rank0.json")))
    assert os.path.relpath(_optim_file(d), d) in manifest["files"] and "hmac_sha256" not in manifest


def test_pickle_payload_in_place_of_optimizer_state_is_refused_unexecuted(engine, tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.KEY_ENV, raising=False)
    d = _save(engine, str(tmp_path / "c"))
    marker = tmp_path / "pwned"
    torch.save({"optimizer_state_dict": _Payload(str(marker))}, _optim_file(d))
    with pytest.raises(ckpt.CheckpointIntegrityError, match="optim_states.pt does not match its sha256"):
        _load(engine, d)
    assert not marker.exists()
    torch.load(_optim_file(d), weights_only=False)  # control: the payload does run when unpickled
    assert marker.exists()


def test_extra_unlisted_pickle_and_missing_manifest_are_refused(engine, tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.KEY_ENV, raising=False)
    marker = tmp_path / "pwned"
    d = _save(engine, str(tmp_path / "c"))
    extra = os.path.join(d, ckpt.tag_for(3), "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    torch.save(_Payload(str(marker)), extra)
    with pytest.raises(ckpt.CheckpointIntegrityError, match="zero_pp_rank_1_mp_rank_00_optim_states.pt is not listed"):
        _load(engine, d)
    os.remove(extra)
    os.remove(os.path.join(d, "checksums_rank0.json"))  # a crafted folder with no manifest at all
    torch.save({"optimizer_state_dict": _Payload(str(marker))}, _optim_file(d))
    with pytest.raises(ckpt.CheckpointIntegrityError, match="has no checksums_rank<rank>.json"):
        _load(engine, d)
    os.remove(os.path.join(d, "trainer_state_rank0.json"))
    with pytest.raises(ckpt.CheckpointIntegrityError):
        _load(engine, d)
    assert not marker.exists()


def test_hmac_signed_manifest_needs_the_same_key(engine, tmp_path, monkeypatch):
    monkeypatch.setenv(ckpt.KEY_ENV, "right-key")
    d = _save(engine, str(tmp_path / "c"))
    assert len(json.load(open(os.path.join(d, "checksums_rank0.json")))["hmac_sha256"]) == 64
    assert _load(engine, d) == {"step": 3}
    monkeypatch.setenv(ckpt.KEY_ENV, "wrong-key")
    with pytest.raises(ckpt.CheckpointIntegrityError, match="checksums_rank0.json: HMAC signature does not match"):
        _load(engine, d)
    # a writer without the key swaps a file and rewrites the checksums: refused under the key
    monkeypatch.delenv(ckpt.KEY_ENV)
    marker = tmp_path / "pwned"
    torch.save({"optimizer_state_dict": _Payload(str(marker))}, _optim_file(d))
    ckpt.seal_checkpoint(d, 0)
    monkeypatch.setenv(ckpt.KEY_ENV, "right-key")
    with pytest.raises(ckpt.CheckpointIntegrityError, match="HMAC signature missing"):
        _load(engine, d)
    assert not marker.exists()


def test_missing_listed_file_is_named(engine, tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.KEY_ENV, raising=False)
    d = _save(engine, str(tmp_path / "c"))
    os.remove(os.path.join(d, "rng_state_rank0.safetensors"))
    with pytest.raises(ckpt.CheckpointIntegrityError, match="rng_state_rank0.safetensors is listed in the checksum manifest but missing"):
        _load(engine, d)


def test_no_project_code_unpickles_with_weights_only_false():
    """Project code never calls torch.load(..., weights_only=False) (tests may, as a control)."""
    offenders = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0] in {"tests", ".venv", "out"} or "site-packages" in rel.parts:
            continue
        if "weights_only=False" in path.read_text(errors="replace"):
            offenders.append(str(rel))
    assert not offenders, offenders
