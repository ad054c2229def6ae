"""A real multi-node Ray cluster on 127.0.0.1, started with `ray start` and owned by the test.

Each node is one `ray start --block` in its own session (process group), so the cluster can be
stopped without `ray stop` (which would stop every Ray on the machine): SIGTERM to our own
process groups, then SIGKILL to whatever of our processes is left. Everything the cluster writes
(sessions, logs, sockets, the auth token under a private HOME) lives in one short temp folder, so
it never meets another Ray session on this machine.

    cluster = LocalRayCluster.start(num_cpus=2)
    cluster.add_node(num_cpus=2, resources={"worker_node": 1})
    cluster.ray("job", "submit", "--address", cluster.dashboard_url, "--", "python", "-c", "print(1)")
    cluster.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# The `ray` CLI of the Python running the tests: the cluster's nodes and the job drivers use it.
RAY_BIN = str(Path(sys.executable).with_name("ray"))
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    """Every per-node port pinned to a free one (the defaults would clash with other clusters here)."""
    flags = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    return [arg for flag in flags for arg in (flag, str(free_port()))]


@dataclass
class LocalRayCluster:
    root: Path  # temp folder: home/ (auth token), ray-<node>/ (each node's --temp-dir), <node>.log
    env: dict
    port: int
    dashboard_port: int
    nodes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HOST}:{self.dashboard_port}"

    @classmethod
    def start(cls, num_cpus: int, resources: dict | None = None, object_store_mb: int = 200) -> "LocalRayCluster":
        """Start a head node (token auth on, private HOME and temp dir) and wait until it answers."""
        root = Path(tempfile.mkdtemp(prefix="rayjs-", dir="/tmp"))  # short: Ray's socket paths live below it
        home = root / "home"
        home.mkdir()
        # No RAY_ADDRESS (it would point drivers elsewhere) and no PYTHONPATH (jobs import the uploaded working dir).
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
        env.update({
            "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
            # `python` in a job entrypoint must be this Python (the one that has our dependencies)
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        subprocess.run([RAY_BIN, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
        assert (home / ".ray" / "auth_token").is_file()
        cluster = cls(root=root, env=env, port=free_port(), dashboard_port=free_port())
        try:
            cluster._spawn("head", [
                "--head", "--node-ip-address", HOST, "--port", str(cluster.port),
                "--dashboard-host", HOST, "--dashboard-port", str(cluster.dashboard_port),
                "--ray-client-server-port", str(free_port()),
            ], num_cpus, resources, object_store_mb)
            cluster.wait_for_nodes(1)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add_node(self, num_cpus: int, resources: dict | None = None, object_store_mb: int = 200) -> None:
        """Join one more node (`ray start --address`) and wait until the cluster lists it."""
        self._spawn(f"node{len(self.nodes)}", ["--address", self.address, "--node-ip-address", HOST],
                    num_cpus, resources, object_store_mb)
        self.wait_for_nodes(len(self.nodes))

    def _spawn(self, name: str, args: list[str], num_cpus: int, resources: dict | None, object_store_mb: int) -> None:
        cmd = [RAY_BIN, "start", "--block", *args, *_node_ports(), "--num-cpus", str(num_cpus), "--num-gpus", "0",
               "--resources", json.dumps(resources or {}), "--object-store-memory", str(object_store_mb * 2**20),
               # a temp dir per node: nodes sharing one would unpack (and delete) each other's job packages
               "--temp-dir", str(self.root / f"ray-{name}"), "--disable-usage-stats"]
        log = open(self.root / f"{name}.log", "w")
        # Own session: the node's raylet, GCS, dashboard and workers share this process group.
        self.nodes.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def ray(self, *args: str, cwd: Path | None = None, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run the `ray` CLI against this cluster (its env: token auth, private HOME)."""
        proc = subprocess.run([RAY_BIN, *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def list_state(self, kind: str, *filters: str) -> list[dict]:
        """`ray list KIND --detail` as dicts (nodes, actors, tasks, jobs, ...)."""
        args = ["list", kind, "--address", self.dashboard_url, "--format", "json", "--detail", "--limit", "10000"]
        for f in filters:
            args += ["--filter", f]
        return json.loads(self.ray(*args, timeout=120).stdout)

    def wait_for_nodes(self, n: int, timeout: float = 180) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            for proc in self.nodes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a `ray start` exited with {proc.returncode}; see {self.root}/*.log:\n"
                                       + self.logs_tail())
            proc = self.ray("list", "nodes", "--address", self.dashboard_url, "--format", "json", "--detail",
                            timeout=120, check=False)
            if proc.returncode == 0 and proc.stdout.lstrip().startswith("["):  # else "No resource in the cluster"
                alive = [node for node in json.loads(proc.stdout) if node["state"] == "ALIVE"]
                if len(alive) >= n:
                    return alive
            if time.time() > deadline:
                raise TimeoutError(f"{n} Ray nodes not up after {timeout:.0f} s:\n{proc.stderr[-2000:]}\n{self.logs_tail()}")
            time.sleep(1)

    def logs_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(self.root.glob("*.log")))

    def stop(self, grace_s: float = 5) -> None:
        """Stop our nodes only: SIGTERM our process groups, then SIGKILL our leftover processes."""
        ours: list[psutil.Process] = []
        for proc in self.nodes:
            try:
                parent = psutil.Process(proc.pid)
                ours += [parent, *parent.children(recursive=True)]  # job drivers run in sessions of their own
            except psutil.NoSuchProcess:
                pass
        for proc in self.nodes:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        _, alive = psutil.wait_procs(ours, timeout=grace_s)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for proc in self.nodes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def leftover_processes(self) -> list[psutil.Process]:
        """Processes that still mention this cluster's temp folder (what `stop` must have ended)."""
        marker = str(self.root)
        left = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in arg for arg in p.info["cmdline"] or []):
                    left.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return left
