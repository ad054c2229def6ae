"""Connect to Ray the same way on a laptop and on a cluster.

`ray job submit` and `RAY_ADDRESS=...` attach to the running cluster; otherwise Ray starts an
embedded local cluster. Either way the job code is the same.
"""

from __future__ import annotations

import logging
import os

import ray


def init_ray(num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Start or attach to Ray; returns the cluster's resources."""
    if not ray.is_initialized():
        kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": True}
        # RAY_ADDRESS=local forces a fresh embedded cluster even if one runs on this machine.
        if os.environ.get("RAY_ADDRESS", "") in ("", "local") and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        if quiet:
            kwargs["logging_level"] = logging.WARNING
        try:
            ray.init(**kwargs)
        except ValueError as exc:  # a local cluster is already running: join it as it is
            if "existing cluster" not in str(exc):
                raise
            kwargs.pop("num_cpus", None)
            ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the job prints its own progress line
    ctx.print_on_execution_start = False
    return ray.cluster_resources()
