"""Run an experiment: a base stage config under a grid of overrides, each point a Ray Tune trial that trains the stage
through Ray Train exactly as `pipelines.train` does, then evaluates it; a results table at the end.

    python -m pipelines.experiment --config experiments/mtp_depth.yaml [--output OUT] [--dry-run]
    ray job submit --working-dir . -- python -m pipelines.experiment --config experiments/data_scale.yaml key=value ...

`--dry-run` checks every trial's stage config (a bad key in any trial: one line naming the file, the trial and
the key; exit 1) and prints the trials (overrides, config hash, rows and steps, memory per GPU from the stage dry
run) before anything is booked. Otherwise: the bundled sample is built as `pipelines.demo` builds it when the YAML
reads it and it is missing; every trial's inputs are checked before Ray; finished trials (`OUT/trials/<hash>/
result.json`) are skipped; the others run as Tune trials, as many side by side as the cluster's resources allow
(resources per trial = workers x per-worker CPUs/GPUs). An interrupted trial resumes from its checkpoints (its Ray
Train run is `OUT/trials/<hash>`). Each trial writes its row when it finishes, so a killed driver loses no finished
trial. At the end: `OUT/results.jsonl`, `OUT/results.md`, `OUT/index.html`; no placement group or actor of a trial
is left (Ray #54305: a stopped trial's Train placement group can outlive it, so leftovers are removed and named).

Trailing `key=value` overrides apply to every trial (e.g. `max_steps=2000 scaling.use_gpu=true`), after the YAML's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time

from pipelines.cli import EXIT_CONFIG_PROBLEM, require_writable_folder, user_errors_exit
from pipelines.cli import run as run_cli
from pipelines.logs import setup_logging, terminal_line
from pipelines.ray_setup import init_ray
from pipelines.stage_run import CPU_ENV, build_trainer, check_shared_storage, export_final, resolve_paths
from tokenization import storage
from tokenization.errors import UserError
from training.experiment import (DONE, EVAL_DIR, FAILED, RESULT, ExperimentConfig, Trial, eval_data, expand,
                                 finished, load_experiment, trial_config, trial_folder, trial_result)
from training.stage_config import StageConfig

log = logging.getLogger("pipelines.experiment")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # on PYTHONPATH of the evaluation subprocess
RESULTS_JSONL, RESULTS_MD, INDEX_HTML = "results.jsonl", "results.md", "index.html"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML, e.g. experiments/mtp_depth.yaml")
    p.add_argument("--output", default="", help="results and trial folders (default: the YAML's output, else out/experiments/<name>)")
    p.add_argument("--dry-run", action="store_true", help="check every trial and print the table; no Ray, no training")
    p.add_argument("overrides", nargs="*", help="key=value for every trial, after the YAML's (e.g. max_steps=2000)")
    return p.parse_args(argv)


def plan_trials(exp: ExperimentConfig, out: str) -> list[tuple[Trial, StageConfig, str]]:
    """(trial, stage config, config hash) of every point; the first bad key stops here (ConfigError, one line)."""
    planned = []
    for trial in expand(exp):
        cfg = trial_config(exp, trial, out)  # its run_name is its config hash
        planned.append((trial, cfg, cfg.checkpoint.run_name))
    return planned


def dry_run(exp: ExperimentConfig, planned: list[tuple[Trial, StageConfig, str]], out: str) -> list[dict]:
    """Each trial's stage dry run, as table rows (printed) and dicts (returned)."""
    from training.dry_run import plan

    rows = []
    for trial, cfg, h in planned:
        p = plan(cfg)
        train = p.get("data", {}).get("splits", {}).get("train", {})
        z = p.get("zero_memory", {}).get("this_stage", {})
        rows.append({"trial": trial.label or "base", "config_hash": h, "done": finished(out, h) is not None,
                     "train_rows": train.get("rows"), "train_hours": train.get("hours"), "examples": train.get("examples"),
                     "max_steps": p["max_steps"], "steps_per_epoch": p.get("steps_per_epoch"),
                     "zero2_gb_per_gpu": z.get("zero2_gb_per_gpu"), "zero3_gb_per_gpu": z.get("zero3_gb_per_gpu"),
                     "warnings": p["warnings"]})
    header = ["trial", "config_hash", "done", "train_rows", "train_hours", "examples", "max_steps", "steps_per_epoch",
              "zero2_gb_per_gpu", "zero3_gb_per_gpu"]
    widths = [max(len(h), *(len(_cell(r[h])) for r in rows)) for h in header]
    print(f"experiment {exp.name} dry run ({exp.source}): {len(rows)} trials of {exp.base} (stage {exp.stage}) -> {out}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  " + "  ".join(_cell(r[h]).ljust(w) for h, w in zip(header, widths)))
    for w in sorted({w for r in rows for w in r["warnings"]}):
        print(f"  warning: {w}")
    return rows


def _cell(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def ensure_sample(exp: ExperimentConfig, planned: list[tuple[Trial, StageConfig, str]]) -> None:
    """Build the bundled sample with `pipelines.demo` (a subprocess, as a user runs it) when a trial's input is missing."""
    needed = {p for _, cfg, _ in planned for s in cfg.data.mixture() for p in [s.path, *cfg.checkpoint.init_from]}
    missing = sorted(p for p in needed if not storage.exists(p))
    if not missing or not exp.sample.output:
        return
    cmd = [sys.executable, "-m", "pipelines.demo", "--output", exp.sample.output, *(["--tokenize-only"] if exp.sample.tokenize_only else [])]
    terminal_line(f"experiment {exp.name}: building the sample ({' '.join(cmd[1:])}): {missing[0]} is missing")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))}
    if subprocess.run(cmd, env=env).returncode != 0:
        raise UserError(f"{exp.source}: sample: `{' '.join(cmd[1:])}` failed; see its log under {exp.sample.output}/logs")


def trial_resources(cfg: StageConfig) -> dict[str, float]:
    """What one trial's Ray Train workers book."""
    s = cfg.scaling
    return {"CPU": s.num_workers * s.cpus_per_worker, **({"GPU": s.num_workers * s.gpus_per_worker} if s.use_gpu else {})}


def concurrency(exp: ExperimentConfig, cfgs: list[StageConfig], cluster: dict) -> int:
    """Trials side by side: the YAML's `max_concurrent_trials`, else the cluster's resources / the largest trial's."""
    need: dict[str, float] = {}
    for cfg in cfgs:
        for k, v in trial_resources(cfg).items():
            need[k] = max(need.get(k, 0.0), v)
    fits = min(int(cluster.get(k, 0) // v) for k, v in need.items())
    if fits < 1:
        have = ", ".join(f"{k} {cluster.get(k, 0):g}" for k in need)
        raise UserError(f"{exp.source}: a trial needs {', '.join(f'{k} {v:g}' for k, v in need.items())} but the cluster has {have}: "
                        "lower resources (num_workers, cpus_per_worker, gpus_per_worker)")
    return min(exp.max_concurrent_trials, fits) if exp.max_concurrent_trials else fits


def evaluate_trial(exp: ExperimentConfig, cfg: StageConfig, export: str, folder: str) -> dict:
    """`pipelines.evaluate` of a trial's export, as a user runs it (a subprocess: entry points never import each other)."""
    out = os.path.join(folder, EVAL_DIR)
    cmd = [sys.executable, "-m", "pipelines.evaluate", "--checkpoint", export, "--data", eval_data(exp, cfg), "--output", out,
           *exp.evaluate.flags()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pipelines.evaluate failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, "eval.json")) as f:
        return json.load(f)


def run_trial(config: dict, exp: ExperimentConfig, jobs: list[tuple[Trial, StageConfig, str]]) -> dict:
    """A Tune trial: the stage under Ray Train (Tune hears its reports), the evaluation, then `result.json`."""
    from ray.tune.integration.ray_train import TuneReportCallback

    trial, cfg, h = jobs[config["job"]]
    folder = trial_folder(os.path.dirname(cfg.checkpoint.storage_path), h)
    started = time.time()
    try:
        result = build_trainer(cfg, callbacks=[TuneReportCallback()]).fit()
        export = export_final(result, cfg)
        evaluation = evaluate_trial(exp, cfg, export, folder) if exp.evaluate and export else None
        row = trial_result(cfg, trial, h, result.metrics or {}, started, time.time(), evaluation)
    except Exception as exc:  # noqa: BLE001 - the row says why; the trial resumes from its checkpoint next time
        row = trial_result(cfg, trial, h, {}, started, time.time(), None, status=FAILED, error=f"{type(exc).__name__}: {exc}")
    storage.write_bytes_atomic(os.path.join(folder, RESULT), json.dumps(row, indent=1).encode())
    return {"status": row["status"], "val_loss": row["val_loss"]}


def _job_placement_groups(before: set[str]) -> list[str]:
    """Live placement groups of this job: by `creator_job_id` through the state API where it answers (a cluster with
    its dashboard), else those created since `before` (an embedded cluster serves this job alone)."""
    import ray

    try:
        from ray.util.state import list_placement_groups

        job = ray.get_runtime_context().get_job_id()
        return [pg.placement_group_id for pg in list_placement_groups(filters=[("creator_job_id", "=", job)], raise_on_missing_output=False)
                if pg.state != "REMOVED"]
    except Exception:  # noqa: BLE001 - no dashboard (embedded cluster): the GCS table
        return [pg for pg, info in ray.util.placement_group_table().items() if pg not in before and info["state"] != "REMOVED"]


def _job_actors(before: set[str]) -> dict[str, dict]:
    """Actor id -> GCS record of this job's unnamed actors alive now that were not alive at the start (GCS actor table).

    Named actors are left out: they are cluster services every job shares by name (e.g. Ray Data/Train's detached
    `AutoscalingCoordinator`, created once and restarted forever), not a trial's.
    """
    import ray
    from ray._private.state import actors

    job = ray.get_runtime_context().get_job_id()
    return {a: info for a, info in actors().items()
            if info["JobID"] == job and not info["Name"] and a not in before and info["State"] != "DEAD"}


def _end_actor_process(info: dict) -> None:
    """End a leftover actor of this job by its worker process, on its node.

    `ray.kill` needs a handle, and the actors that stay behind (Ray Train's detached `PlacementGroupCleaner`, created
    by a Train controller that is gone) have none in this process; their worker process is this job's to end, and
    with no restarts allowed Ray marks the actor dead.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def end(pid: int) -> None:
        import signal

        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    node = info["Address"]["NodeID"]
    ray.get(end.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(int(info["Pid"])), timeout=60)


def snapshot() -> tuple[set[str], set[str]]:
    """Placement groups and live actors before the trials start."""
    import ray
    from ray._private.state import actors

    return set(ray.util.placement_group_table()), {a for a, info in actors().items() if info["State"] != "DEAD"}


def clean_up(before: tuple[set[str], set[str]], wait_s: float = 20.0) -> dict:
    """No placement group or actor of a trial outlives the experiment.

    Waits for them to go, then ends this job's actors that stay (e.g. Ray Train's detached `PlacementGroupCleaner`,
    whose monitor thread dies when the state API cannot pick a cluster) and removes placement groups that stay
    (ray-project/ray#54305), naming each in the log. Returns what it had to remove and what is left (0, 0).
    """
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    deadline = time.time() + wait_s
    pgs, alive = _job_placement_groups(before[0]), _job_actors(before[1])
    while (pgs or alive) and time.time() < deadline:
        time.sleep(0.5)
        pgs, alive = _job_placement_groups(before[0]), _job_actors(before[1])
    for actor, info in alive.items():
        log.warning("actor %s (%s) outlived its trial: ending it", actor, info["ActorClassName"])
        if info.get("Pid"):
            _end_actor_process(info)
    for pg in pgs:
        log.warning("placement group %s outlived its trial (ray-project/ray#54305): removing it", pg)
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg))))
    deadline = time.time() + wait_s
    while (_job_placement_groups(before[0]) or _job_actors(before[1])) and time.time() < deadline:
        time.sleep(0.5)
    left_pgs, left_actors = _job_placement_groups(before[0]), _job_actors(before[1])
    return {"actors_killed": len(alive), "placement_groups_removed": len(pgs),
            "actors_left": len(left_actors), "placement_groups_left": len(left_pgs)}


def collect(out: str, planned: list[tuple[Trial, StageConfig, str]], reused: set[str]) -> list[dict]:
    """The rows of every trial of this experiment, in trial order, from their folders."""
    rows = []
    for trial, cfg, h in planned:
        path = os.path.join(trial_folder(out, h), RESULT)
        if os.path.isfile(path):
            with open(path) as f:
                row = json.load(f)
        else:
            row = {"trial": trial.label, "index": trial.index, "config_hash": h, "overrides": trial.overrides, "status": "not run"}
        row["reused"] = h in reused
        rows.append(row)
    return rows


def write_results(exp: ExperimentConfig, out: str, rows: list[dict]) -> None:
    from training.experiment_report import render_html, render_markdown

    storage.write_bytes_atomic(os.path.join(out, RESULTS_JSONL), "".join(json.dumps(r) + "\n" for r in rows).encode())
    storage.write_bytes_atomic(os.path.join(out, RESULTS_MD), render_markdown(exp, rows).encode())
    storage.write_bytes_atomic(os.path.join(out, INDEX_HTML), render_html(exp, rows).encode())


def run_experiment(exp: ExperimentConfig, out: str, planned: list[tuple[Trial, StageConfig, str]]) -> dict:
    """Train the trials not finished yet as Tune trials; returns the summary (rows, counts, clean-up)."""
    from ray import tune

    ensure_sample(exp, planned)
    planned = [(t, resolve_paths(cfg), h) for t, cfg, h in planned]  # inputs checked on the driver, before Ray
    reused = {h for _, _, h in planned if finished(out, h)}
    todo = [(t, cfg, h) for t, cfg, h in planned if h not in reused]
    for t, _, h in planned:
        terminal_line(f"experiment {exp.name}: trial {t.index} [{h}] {t.label or 'base'}: "
                      f"{'finished before, skipped' if h in reused else 'to train'}")
    cleanup: dict = {}
    started = time.time()
    if todo:
        if not all(cfg.scaling.use_gpu for _, cfg, _ in todo):
            os.environ.update(CPU_ENV)
        cluster = init_ray()
        check_shared_storage(out)
        n = concurrency(exp, [cfg for _, cfg, _ in todo], cluster)
        terminal_line(f"experiment {exp.name}: {len(todo)} trials, {n} side by side")
        before = snapshot()
        # The trial's own actor only starts the Train run (its workers book the CPUs/GPUs): a byte of memory, as
        # Tune refuses an empty request, so the trials' Train workers get every CPU.
        trainable = tune.with_resources(tune.with_parameters(run_trial, exp=exp, jobs=todo), {"memory": 1})
        tuner = tune.Tuner(trainable, param_space={"job": tune.grid_search(list(range(len(todo))))},
                           tune_config=tune.TuneConfig(max_concurrent_trials=n),
                           run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                                     storage_path=os.path.join(os.path.abspath(out), "_tune"), verbose=0))
        tuner.fit()
        cleanup = clean_up(before)
    rows = collect(out, planned, reused)
    write_results(exp, out, rows)
    summary = {"experiment": exp.name, "output": out, "trials": len(rows), "trained": len(todo), "reused": len(reused),
               "done": sum(r["status"] == DONE for r in rows), "failed": sum(r["status"] == FAILED for r in rows),
               "wall_s": round(time.time() - started, 1), **cleanup,
               "results": os.path.join(out, RESULTS_JSONL), "table": os.path.join(out, RESULTS_MD), "html": os.path.join(out, INDEX_HTML)}
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with user_errors_exit(EXIT_CONFIG_PROBLEM if args.dry_run else UserError.exit_code):
        exp = load_experiment(args.config)
        exp.overrides = [*exp.overrides, *args.overrides]
        out = args.output or exp.output or os.path.join("out", "experiments", exp.name)
        if out.startswith("s3://") or "://" in out:
            raise UserError(f"--output {out}: an experiment's folder is local or a shared file system (trials write their rows there)")
        out = os.path.abspath(out)
        planned = plan_trials(exp, out)
        if args.dry_run:
            setup_logging("experiment", None)
            rows = dry_run(exp, planned, out)
            return {"trials": rows}
    require_writable_folder("--output", out)
    setup_logging("experiment", out)
    summary = run_experiment(exp, out, planned)
    rows = [json.loads(line) for line in open(summary["results"])]
    for r in rows:
        terminal_line(f"  {r['trial'] or 'base'}: {r['status']}, val_loss {r.get('val_loss')}, wall {r.get('wall_s')} s"
                      + (" (finished before)" if r.get("reused") else ""))
    print(json.dumps(summary))
    if summary["failed"]:
        raise UserError(f"experiment {exp.name}: {summary['failed']} of {summary['trials']} trials failed; see their rows in "
                        f"{summary['results']} (a rerun resumes them from their checkpoints)")
    return summary


if __name__ == "__main__":
    run_cli(main)
