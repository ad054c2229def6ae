"""The stage recipe: one class that sets up, trains and checkpoints any of the three stages.

No Ray in here: the launcher hands each worker a `WorkerContext` (rank, world size, device
and a `report(metrics, checkpoint_dir)` callable) and the checkpoint folder to resume from.
`pipelines/train.py` wires it to Ray Train (`report` -> `ray.train.report` with
`Checkpoint.from_directory`; Ray merges the ranks' folders and keeps the last K);
`training/local_launch.py` wires it to plain `torchrun` and to in-process unit tests
(checkpoints copied into `<storage_path>/<run_name>/checkpoint_<step>`). Either way every
rank saves into its own temp folder, barrier, then reports; the folder is gone after
`report` returns, so `report` must copy what it keeps.

Stages (freezing lives in `VocalNetM2.set_stage`):
    1. Talker pre-training on token shards             (collate_tts)
    2. adaptor + Thinker LoRA on speech->text pairs     (collate_speech_to_text)
    3. end-to-end on dialogue pairs                     (collate_dialogue)
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from tokenization import storage
from training import checkpointing as ckpt
from training.data.selection import selection_of
from training.data.sources import make_source
from training.data.stream import BatchStream, MixtureStream, Prefetcher, fixed_batches
from training.metrics import MetricsWriter, StepMeter, all_reduce_sum
from training.model.config import VocalNetConfig
from training.stage_config import SourceConfig, StageConfig, resolve_tokenizer

log = logging.getLogger(__name__)


def lr_lambda(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier at optimizer step `step`: linear warm-up, then cosine/linear decay to `min_ratio`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown LR schedule {schedule!r}")


def build_model(cfg: StageConfig, tokenizer_path: str, device: str):
    """The model for this stage: fresh from `cfg.model`, or the previous stage's export(s) (`init_from`).

    Weights are built in fp32 on `device` (DeepSpeed casts to bf16 when its config enables it).
    """
    from training.model.vocalnet import VocalNetM2

    if not cfg.checkpoint.init_from:
        model_cfg = VocalNetConfig.from_dict(cfg.model.to_dict())  # a copy: the config stays as loaded
        model_cfg.device, model_cfg.dtype = device, "float32"
        return VocalNetM2(model_cfg, tokenizer_path=tokenizer_path)
    first, *rest = [ckpt.localize(ckpt.model_dir_of(p)) for p in cfg.checkpoint.init_from]
    model = VocalNetM2.from_pretrained(first, device=device, dtype="float32", tokenizer_path=tokenizer_path)
    for path in rest:  # later exports overlay the parts they hold
        other = VocalNetM2.from_pretrained(path, device=device, dtype="float32").state_dict()
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in other.items() if k in own and own[k].shape == v.shape}, strict=False)
    return model


def _collate_fn(stage: int, tokenizer, model_cfg):
    from training.data import collate

    if stage == 1:
        return partial(collate.collate_tts, tokenizer=tokenizer, cfg=model_cfg)
    from training.model.audio_encoder import build_feature_extractor

    fe = build_feature_extractor(model_cfg.audio)
    fn = collate.collate_speech_to_text if stage == 2 else collate.collate_dialogue
    return partial(fn, tokenizer=tokenizer, cfg=model_cfg, feature_extractor=fe)


def _count_tokens(outputs: dict, n_codebooks: int) -> int:
    """Target tokens of a micro-batch from the model's counts: text labels + speech frames x codebooks."""
    text = int(outputs["n_text_tokens"]) if "n_text_tokens" in outputs else 0
    frames = int(outputs["n_frames"]) if "n_frames" in outputs else 0
    return text + frames * n_codebooks


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


Report = Callable[[dict, "str | None"], None]


@dataclass
class WorkerContext:
    """What a launcher tells the recipe: which worker this is and where its results go.

    `report(metrics, checkpoint_dir)` is called on every rank at the same steps; with a
    folder, that rank's checkpoint files are in it (deleted after the call returns).
    """

    rank: int
    world_size: int
    device: torch.device
    report: Report
    node_id: str = ""  # for placement.json: which node each rank ran on


class StageRecipe:
    """setup -> train (-> save_checkpoint every N steps and at the end) for one worker."""

    def __init__(self, cfg: StageConfig, ds_config: dict, ctx: WorkerContext):
        self.cfg, self.ds_config, self.ctx = cfg, ds_config, ctx
        self.rank, self.world_size, self.device = ctx.rank, ctx.world_size, ctx.device
        self.step = 0
        self.writer: MetricsWriter | None = None

    # ---- setup -----------------------------------------------------------------------------
    def setup(self, checkpoint_dir: str | None = None) -> None:
        """Model, data stream, DeepSpeed engine; then the checkpoint's state if resuming."""
        import deepspeed
        from transformers import PreTrainedTokenizerFast

        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # same init on every rank (DeepSpeed also broadcasts rank 0's)
        tokenizer_path = resolve_tokenizer(cfg.tokenizer)
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)
        self.model = build_model(cfg, tokenizer_path, str(self.device))
        self.model.set_stage(cfg.stage)
        self.collate = _collate_fn(cfg.stage, self.tokenizer, self.model.cfg)

        params = self.model.trainable_parameters()
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # biases and norms
        optim = cfg.optim
        groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
        )
        schedule = partial(lr_lambda, warmup=optim.warmup_steps, total=cfg.max_steps, schedule=optim.schedule, min_ratio=optim.min_lr_ratio)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=self.model,
            optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
            config=self.ds_config,
        )
        self.zero_stage = self.engine.zero_optimization_stage()

        # Per-rank seeds for dropout / chunk-causal sampling; checkpoints carry the RNG states.
        random.seed(cfg.seed * 1000 + self.rank)
        np.random.seed(cfg.seed * 1000 + self.rank)
        torch.manual_seed(cfg.seed * 1000 + self.rank)

        self.sources = cfg.data.mixture()
        self.stream = self._train_stream()
        self.valid_batches = self._valid_batches()
        if checkpoint_dir:
            self.load_checkpoint(checkpoint_dir)
        placement = [None] * self.world_size  # which node each rank runs on, for the logs
        dist.all_gather_object(placement, self.ctx.node_id)
        if self.rank == 0:
            self.writer = MetricsWriter(self.tensorboard_dir())
            self.placement = {"nodes_by_rank": placement, "zero_stage": self.zero_stage}
            self.writer.write_json("placement.json", self.placement)
            log.info("stage %d: %d trainable params, ZeRO-%d, %d ranks, from step %d",
                     cfg.stage, sum(getattr(p, "ds_numel", p.numel()) for p in params), self.zero_stage, self.world_size, self.step)

    def _source(self, source: SourceConfig, split: str):
        """The stage's reader over one split of one source, its rows selected by `max_wer` / `hours`."""
        d = self.cfg.data
        return make_source(self.cfg.stage, source.path, max_frames=d.max_frames, max_audio_s=d.max_audio_s, split=split,
                           selection=selection_of(source))

    def _train_stream(self) -> MixtureStream:
        """This rank's batches: one `BatchStream` per source, interleaved by weight (one source: just its stream).

        A lone source keeps `data.seed` as its shuffling seed; in a mixture each source's seed
        also carries its name, so two sources never shuffle alike.
        """
        d = self.cfg.data
        streams = {s.name: BatchStream(self._source(s, "train"), self.rank, self.world_size, d.micro_batch_size,
                                       d.buffer_size, d.seed if len(self.sources) == 1 else f"{d.seed}/{s.name}")
                   for s in self.sources}
        return MixtureStream(streams, {s.name: s.weight for s in self.sources}, seed=d.seed, shard=self.rank)

    def _valid_batches(self) -> dict[str, list[list[dict]]]:
        """Each source's fixed validation micro-batches (its `valid` rows); none when it has none or eval is off."""
        cfg = self.cfg
        if not cfg.eval_every or not cfg.eval_batches:
            return {}
        out = {s.name: fixed_batches(self._source(s, "valid"), cfg.data.micro_batch_size, cfg.eval_batches)
               for s in self.sources}
        return {name: batches for name, batches in out.items() if batches}

    def tensorboard_dir(self) -> str:
        c = self.cfg.checkpoint
        if self.cfg.tensorboard_dir:
            return self.cfg.tensorboard_dir
        if ckpt.is_remote_uri(c.storage_path):  # event files need a local folder: rank 0's node
            return os.path.join(os.path.expanduser("~/ray_results/tensorboard"), c.run_name)
        return os.path.join(os.path.abspath(c.storage_path), c.run_name, "tensorboard")

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Module, optimizer and LR scheduler from DeepSpeed; step, reader position and RNG from ours."""
        ckpt.verify_checkpoint(checkpoint_dir)  # before DeepSpeed unpickles anything in it
        load_path, _ = self.engine.load_checkpoint(checkpoint_dir)
        if load_path is None:
            raise RuntimeError(f"no DeepSpeed checkpoint in {checkpoint_dir}")
        state = ckpt.load_trainer_state(checkpoint_dir, self.rank, self.world_size)
        self.step = state["step"]
        self.stream.load_state_dict(state["stream"])

    # ---- train -----------------------------------------------------------------------------
    def train(self) -> None:
        cfg = self.cfg
        self.stream_state = self.stream.state_dict()
        batches = Prefetcher(self.stream, self.collate, depth=cfg.data.prefetch)  # decode + collate off the step
        meter = StepMeter()
        self.engine.train()
        while self.step < cfg.max_steps:
            for _ in range(cfg.optim.grad_accum):  # one optimizer step = grad_accum micro-batches
                n_rows, batch, self.stream_state = next(batches)
                batch = _to_device(batch, self.device)
                out = self.engine(batch, stage=cfg.stage)
                self.engine.backward(out["loss"])
                self.engine.step()  # DeepSpeed steps optimizer + scheduler at the accumulation boundary
                meter.add(out, samples=n_rows, tokens=_count_tokens(out, self.model.cfg.talker.n_codebooks))
            self.step += 1
            self._maybe_crash()

            is_log = self.step % cfg.log_every == 0 or self.step == cfg.max_steps
            is_ckpt = self.step % cfg.checkpoint.every_steps == 0 or self.step == cfg.max_steps
            is_eval = bool(self.valid_batches) and (self.step % cfg.eval_every == 0 or self.step == cfg.max_steps)
            if not (is_log or is_ckpt or is_eval):
                continue
            metrics = {**meter.reduce(), **self.rows_drawn(), "lr": self.scheduler.get_last_lr()[0], "step": self.step}
            if is_eval:
                metrics.update(self.validation_losses())
            meter.reset()
            if self.writer:
                self.writer.write(self.step, metrics)
            if is_ckpt:
                self.save_checkpoint(metrics, final=self.step == cfg.max_steps)
            else:
                self.ctx.report(metrics, None)  # same number of reports on every rank: decided by step only
        batches.close()
        if self.writer:  # Adam's moments exist only after a step: measured now
            self.writer.write_json("placement.json", {**self.placement, "optimizer_state_bytes_rank0": optimizer_state_bytes(self.engine)})
            self.writer.close()

    def rows_drawn(self) -> dict[str, float]:
        """`rows/<name>`: rows drawn from each source since step 0, over all ranks (collective).

        Read from the stream state of the last batch trained on, which checkpoints carry, so
        the counts go on across a resume.
        """
        names = [s.name for s in self.sources]
        rows = self.stream_state.get("rows", {})
        total = all_reduce_sum(torch.tensor([float(rows.get(n, 0)) for n in names], dtype=torch.float64))
        return {f"rows/{n}": total[i].item() for i, n in enumerate(names)}

    def validation_losses(self) -> dict[str, float]:
        """`val_loss/<name>` per source with valid rows, and `val_loss`: their mean weighted by the sources' weights
        (the loss on the mixture the run trains on; one source: its loss).

        Each source's loss is the mean over its fixed valid micro-batches; rank r takes batches
        r, r+W, ... Every rank runs the same number of forwards (ZeRO-3 gathers parameters
        collectively): a rank short of batches repeats one with weight 0. Eval mode, no
        gradients, and no RNG drawn (the chunk-causal draw happens only in training mode), so
        training goes on exactly as without it.
        """
        names = list(self.valid_batches)
        w = self.world_size
        sums = torch.zeros(len(names), 2, dtype=torch.float64)  # per source: [sum of batch losses, number of batches]
        self.engine.eval()
        with torch.no_grad():
            for j, name in enumerate(names):
                batches = self.valid_batches[name]
                n = len(batches)
                for i in range(self.rank, -(-n // w) * w, w):
                    batch = _to_device(self.collate(batches[i % n]), self.device)
                    loss = float(self.engine(batch, stage=self.cfg.stage)["loss"])
                    weight = 1.0 if i < n else 0.0
                    sums[j] += torch.tensor([loss * weight, weight], dtype=torch.float64)
        self.engine.train()
        sums = all_reduce_sum(sums)
        losses = {name: float(sums[j, 0] / sums[j, 1].clamp(min=1.0)) for j, name in enumerate(names)}
        weights = {s.name: s.weight for s in self.sources}
        overall = sum(weights[n] * v for n, v in losses.items()) / sum(weights[n] for n in losses)
        return {"val_loss": overall, **{f"val_loss/{n}": v for n, v in losses.items()}}

    # ---- checkpoint ------------------------------------------------------------------------
    def save_checkpoint(self, metrics: dict, final: bool = False) -> None:
        """Every rank saves its DeepSpeed shard + own state into a temp folder; barrier; report.

        The final checkpoint also holds `model/`, the exported model (ZeRO-3 gathers the
        16-bit weights first).
        """
        with tempfile.TemporaryDirectory(prefix="ckpt_") as tmp:
            self.engine.save_checkpoint(tmp, tag=ckpt.tag_for(self.step))
            ckpt.save_trainer_state(tmp, self.rank, {"step": self.step, "stream": self.stream_state,
                                                     "world_size": self.world_size, "stage": self.cfg.stage})
            if final:
                self.export(os.path.join(tmp, ckpt.MODEL_DIR))
            ckpt.seal_checkpoint(tmp, self.rank)  # checksums of all this rank wrote, checked at resume
            dist.barrier()
            self.ctx.report(metrics, tmp)

    def export(self, out_dir: str) -> None:
        """Rank 0 writes `save_pretrained` (safetensors + config + peft adapter); collective under ZeRO-3."""
        if self.zero_stage == 3:
            import deepspeed

            # gathers the (16-bit on GPU) partitions of every parameter onto every rank, read-only
            with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                if self.rank == 0:
                    self.model.save_pretrained(out_dir)
        elif self.rank == 0:
            self.model.save_pretrained(out_dir)

    def _maybe_crash(self) -> None:
        """Fault injection (tests): the last rank dies once at `crash_at_step`; a marker makes it once."""
        if not self.cfg.crash_at_step or self.step != self.cfg.crash_at_step or self.rank != self.world_size - 1:
            return
        c = self.cfg.checkpoint
        marker = storage.join(c.storage_path, c.run_name, f".crashed_at_{self.step}")
        if storage.exists(marker):
            return
        storage.write_bytes_atomic(marker, b"")
        log.warning("fault injection: rank %d exits at step %d", self.rank, self.step)
        os._exit(1)


def optimizer_state_bytes(engine) -> int:
    """Bytes this rank holds for the optimizer: the fp32 master partition (ZeRO-1/2) plus the Adam moments."""
    opt = engine.optimizer
    total = sum(g.numel() * g.element_size() for g in getattr(opt, "single_partition_of_fp32_groups", []))
    inner = getattr(opt, "optimizer", opt)
    for state in getattr(inner, "state", {}).values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
    return total


def run_worker(cfg: StageConfig, ds_config: dict, ctx: WorkerContext, checkpoint_dir: str | None = None) -> StageRecipe:
    """One worker's whole job, whatever launched it: set up (resuming from `checkpoint_dir`), train."""
    recipe = StageRecipe(cfg, ds_config, ctx)
    recipe.setup(checkpoint_dir)
    recipe.train()
    return recipe
