"""Connect to Ray the same way on a laptop and on a cluster.

`ray job submit` and `RAY_ADDRESS=...` attach to the running cluster; otherwise Ray starts an
embedded local cluster. Either way the job code is the same. Ray's own loggers and every line
its workers print go to the job's log file (`pipelines.logs`), not the terminal.
"""

from __future__ import annotations

import logging
import os

import ray

from pipelines.logs import announce_log, quiet_ray_loggers, route_worker_output

log = logging.getLogger(__name__)

# VOCALNET_RAY_DASHBOARD=0: an embedded cluster starts without Ray's dashboard (its processes cost a few
# CPU-seconds per job start, which CI and the test suite pay dozens of times; nobody watches them there).
DASHBOARD_ENV = "VOCALNET_RAY_DASHBOARD"


def init_ray(num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Start or attach to Ray; returns the cluster's resources."""
    quiet_ray_loggers()
    if not ray.is_initialized():
        kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": True}
        # RAY_ADDRESS=local forces a fresh embedded cluster even if one runs on this machine.
        local = os.environ.get("RAY_ADDRESS", "") in ("", "local")
        if local and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        if local and os.environ.get(DASHBOARD_ENV, "1") == "0":
            kwargs["include_dashboard"] = False
        if quiet:
            kwargs["logging_level"] = logging.WARNING
        try:
            ray.init(**kwargs)
        except ValueError as exc:  # a local cluster is already running: join it as it is
            if "existing cluster" not in str(exc):
                raise
            kwargs.pop("num_cpus", None)
            ray.init(**kwargs)
        quiet_ray_loggers()
        if route_worker_output():
            announce_log()
        log.info("Ray session %s", ray._private.worker._global_node.get_session_dir_path()
                 if getattr(ray._private.worker, "_global_node", None) else "(remote)")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the job prints its own progress line
    ctx.print_on_execution_start = False
    quiet_ray_loggers()  # ray.data configures its loggers on import
    return ray.cluster_resources()
