"""Train one VocalNet-M2 stage with DeepSpeed ZeRO through Ray Train.

    python -m pipelines.train --stage 1 --config training/configs/stage1_tiny.yaml [key=value ...]
    ray job submit --working-dir . -- python -m pipelines.train --stage 2 --config training/configs/stage2.yaml
    python -m pipelines.train --stage 1 --config training/configs/stage1.yaml --dry-run [--json]
    torchrun --nproc_per_node=2 -m pipelines.train --stage 1 --config training/configs/stage1_tiny.yaml --torchrun

`--dry-run` loads no weights and starts no Ray: it checks the config and prints what the run
would be (parameters per part, ZeRO memory per GPU, tokens per step, data rows and hours per
split, steps per epoch; per data source its weight, share and the epochs it reaches). `--torchrun` runs the same recipe under plain torchrun, without Ray.
Config and input mistakes stop here, before Ray starts, as one line naming the key and the file
(exit 2; with `--dry-run` exit 1, the dry run's verdict; `--debug` shows the traceback).

Locally this starts an embedded Ray; with RAY_ADDRESS set (or under `ray job submit`) it joins
that cluster. Rerunning with the same `checkpoint.storage_path` + `checkpoint.run_name`
resumes from the run's latest checkpoint; worker failures are retried
`checkpoint.max_failures` times from the latest checkpoint. At the end the exported model
is copied to `<storage_path>/<run_name>/export` (what the next stage's `init_from` names).

The TorchTrainer, its DeepSpeed JSON and the checks before Ray live in `pipelines/stage_run.py`, shared with
`pipelines.experiment` (a stage per Ray Tune trial).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from pipelines.cli import EXIT_CONFIG_PROBLEM, user_errors_exit
from pipelines.cli import run as run_cli
from pipelines.logs import setup_logging
from pipelines.ray_setup import init_ray
from pipelines.stage_run import CPU_ENV, build_trainer, check_shared_storage, export_final, resolve_paths, worker_env  # noqa: F401
from training.stage_config import StageConfig, load_config

log = logging.getLogger("pipelines.train")


def run(cfg: StageConfig):
    """Train one stage on the current (or an embedded) Ray cluster; returns the Ray Train Result."""
    cfg = resolve_paths(cfg)
    if not cfg.scaling.use_gpu:
        os.environ.update(CPU_ENV)
    init_ray()  # embedded local Ray, or the cluster named by RAY_ADDRESS / `ray job submit`
    check_shared_storage(cfg.checkpoint.storage_path)
    t0 = time.time()
    result = build_trainer(cfg).fit()
    export = export_final(result, cfg)
    log.info("stage %d done in %.0f s; checkpoint %s; export %s", cfg.stage, time.time() - t0, result.checkpoint, export)
    print(f"stage {cfg.stage}: final metrics {({k: round(v, 4) for k, v in (result.metrics or {}).items() if isinstance(v, float)})}")
    print(f"stage {cfg.stage}: exported model -> {export}")
    return result


def run_torchrun(cfg: StageConfig) -> None:
    """The same recipe under plain torchrun (one process per rank; no Ray, no retries)."""
    from training.local_launch import close_process_group, require_local_storage, run_local

    require_local_storage(cfg)  # before the process group: a one-line error, not a hung rank
    cfg = resolve_paths(cfg)
    if not cfg.scaling.use_gpu:
        os.environ.update(CPU_ENV)
    try:
        _, reporter, export = run_local(cfg)
    finally:
        close_process_group()  # a clean exit on every rank (no teardown race at interpreter exit)
    if reporter.rank == 0:
        print(f"stage {cfg.stage}: exported model -> {export}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, required=True, choices=[1, 2, 3])
    p.add_argument("--config", required=True, help="stage YAML, e.g. training/configs/stage1_tiny.yaml")
    p.add_argument("--dry-run", action="store_true", help="check the config and print the plan; no weights, no Ray")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as one JSON object")
    p.add_argument("--torchrun", action="store_true", help="run under torchrun (its env names rank/world) instead of Ray Train")
    p.add_argument("overrides", nargs="*", help="key=value overrides with dotted keys, e.g. optim.lr=1e-4 scaling.num_workers=4")
    args = p.parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    cfg = load_config(args.config, args.overrides, stage=args.stage)
    setup_logging(f"train-stage{cfg.stage}", os.path.join(cfg.checkpoint.storage_path, cfg.checkpoint.run_name))
    if args.torchrun:
        run_torchrun(cfg)
        return 0
    run(cfg)
    return 0


def dry_run(args: argparse.Namespace) -> int:
    """`--dry-run`: print the plan; any config problem exits 1 with one line naming the key and the file."""
    from training.dry_run import format_plan, plan

    with user_errors_exit(EXIT_CONFIG_PROBLEM):
        cfg = load_config(args.config, args.overrides, stage=args.stage)
        setup_logging(f"train-stage{cfg.stage}", None)
        result = plan(cfg)
    print(json.dumps(result, indent=1) if args.json else format_plan(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
