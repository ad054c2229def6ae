"""Every file under clusters/ is usable as written: YAMLs parse, the entry points and config files they
name exist, the commands' flags and overrides are accepted, and the cluster shapes are what the jobs
need (CPU workers for data jobs, GPU workers for training, token auth, one Ray version everywhere)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "clusters"
YAMLS = sorted(CLUSTERS.rglob("*.yaml"))
KUBERAY = sorted((CLUSTERS / "kuberay").glob("*.yaml"))
ENTRY = re.compile(r"python -m (pipelines\.\w+)")
# repo files a command or manifest may name: clusters/..., training/configs/...
REPO_PATH = re.compile(r"(?<![\w/.])((?:clusters|training)/[\w./-]+\.(?:yaml|json)|clusters/Dockerfile)")


def docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def strings(node) -> list[str]:
    """Every string value in a parsed YAML tree (runtimeEnvYAML and other embedded YAML included)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def comment_text(path: Path) -> str:
    return "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line)


def shell_commands(text: str) -> list[str]:
    """Lines of shell text with backslash continuations joined."""
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", text).splitlines() if line.strip()]


def entrypoint_commands() -> list[tuple[str, str]]:
    """(where, `python -m pipelines.X args...`) for every entry point in the YAMLs (values and header comments)
    and in the README's commands."""
    found = []
    for path in YAMLS:
        for s in [*(s for d in docs(path) for s in strings(d)), comment_text(path)]:
            for line in shell_commands(s):
                if ENTRY.search(line):
                    found.append((path.name, line[line.index("python -m"):].split("  #")[0]))
    readme = CLUSTERS / "README.md"
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S):
        for line in shell_commands(block):
            if ENTRY.search(line):
                found.append(("README.md", line[line.index("python -m"):].split("  #")[0]))
    return found


def cluster_specs() -> list[tuple[str, dict]]:
    """(file, RayCluster spec) of the RayCluster and of every RayJob that brings its own cluster."""
    specs = []
    for path in KUBERAY:
        for d in docs(path):
            if d["kind"] == "RayCluster":
                specs.append((path.name, d["spec"]))
            elif "rayClusterSpec" in d["spec"]:
                specs.append((path.name, d["spec"]["rayClusterSpec"]))
    return specs


def has_gpu(group: dict) -> bool:
    return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in group["template"]["spec"]["containers"])


def test_every_yaml_parses_and_there_are_all_of_them():
    names = {p.relative_to(CLUSTERS).as_posix() for p in YAMLS}
    assert {"ray-cluster.yaml", "runtime_env.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob-tokenize.yaml",
            "kuberay/rayjob-filter.yaml", "kuberay/rayjob-audit.yaml", "kuberay/rayjob-train-stage1.yaml",
            "kuberay/rayjob-train-stage2.yaml", "kuberay/rayjob-train-stage3.yaml"} <= names
    for path in YAMLS:
        assert docs(path), f"{path} is empty"


def test_every_entry_point_exists_and_answers_help():
    modules = set()
    for path in YAMLS:
        text = comment_text(path) + "\n" + "\n".join(s for d in docs(path) for s in strings(d))
        modules |= set(ENTRY.findall(text))
    modules |= {m for _, cmd in entrypoint_commands() for m in ENTRY.findall(cmd)}
    assert {"pipelines.tokenize", "pipelines.filter", "pipelines.audit", "pipelines.train"} <= modules
    for module in modules:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{module} named in clusters/ does not exist"
    # all at once: each one imports torch/ray, which takes seconds
    procs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m in sorted(modules)}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"python -m {module} --help exited {proc.returncode}:\n{err[-2000:]}"
        assert "usage:" in out, out


def test_every_command_parses_with_its_entry_point():
    """Flags of tokenize/filter/audit commands parse; train commands load their stage YAML with the overrides."""
    from pipelines import filter as filter_job
    from pipelines import tokenize as tokenize_job
    from training.stage_config import load_config

    commands = entrypoint_commands()
    assert len(commands) >= 12, commands
    rejected = []
    for where, cmd in commands:
        module, *args = shlex.split(cmd)[2:]
        try:
            if module == "pipelines.tokenize":
                tokenize_job.parse_args(args)
            elif module == "pipelines.filter":
                filter_job.parse_args(args)
            elif module == "pipelines.audit":
                assert len([a for a in args if not a.startswith("--")]) == 2 and args.count("--report") == 1
            elif module == "pipelines.train":
                stage, config = int(args[args.index("--stage") + 1]), args[args.index("--config") + 1]
                overrides = [a for a in args if "=" in a and not a.startswith("-")]
                cfg = load_config(str(ROOT / config), overrides, stage=stage)
                cfg.deepspeed_config()  # the DeepSpeed JSON it names exists and loads
            else:
                raise ValueError(f"unknown entry point {module}")
        except (SystemExit, Exception) as exc:  # argparse exits; load_config raises
            rejected.append(f"{where}: {cmd}\n    -> {type(exc).__name__}: {exc}")
    assert not rejected, "\n".join(rejected)


def test_every_repo_file_named_in_clusters_exists():
    texts = {p: p.read_text() for p in [*YAMLS, CLUSTERS / "README.md", CLUSTERS / "Dockerfile", ROOT / "README.md"]}
    named = {(p.name, m) for p, t in texts.items() for m in REPO_PATH.findall(t)}
    assert any(m.startswith("training/configs/") for _, m in named) and any(m.endswith(".json") for _, m in named)
    missing = [(where, m) for where, m in named if not (ROOT / m).exists()]
    assert not missing, f"named but not in the repo: {missing}"
    for path in (CLUSTERS / "deepspeed").glob("*.json"):
        ds = json.loads(path.read_text())
        assert ds["zero_optimization"]["stage"] in (2, 3)
    # `deepspeed=../../clusters/...` overrides resolve from training/configs/
    for rel in re.findall(r"deepspeed=(\S+\.json)", texts[CLUSTERS / "README.md"]):
        assert (ROOT / "training" / "configs" / rel).resolve().is_file(), rel


def test_launcher_yaml_is_valid_for_ray_and_has_cpu_and_gpu_workers():
    import jsonschema

    cfg = docs(CLUSTERS / "ray-cluster.yaml")[0]
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {name: t["resources"] for name, t in types.items() if name != cfg["head_node_type"]}
    assert any(r.get("CPU", 0) > 0 and not r.get("GPU") for r in workers.values()), workers
    assert any(r.get("GPU", 0) > 0 for r in workers.values()), workers
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in cfg[key]), key
    assert any("auth_token" in remote for remote in cfg["file_mounts"])


def test_runtime_env_is_accepted_by_ray():
    from ray.runtime_env import RuntimeEnv

    env = docs(CLUSTERS / "runtime_env.yaml")[0]
    RuntimeEnv(**env)
    assert {"out/", ".venv/"} <= set(env["excludes"]) and env["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_kuberay_manifests():
    from ray.runtime_env import RuntimeEnv

    clusters = {d["metadata"]["name"] for p in KUBERAY for d in docs(p) if d["kind"] == "RayCluster"}
    jobs = {}
    for path in KUBERAY:
        for d in docs(path):
            assert d["apiVersion"] == "ray.io/v1" and d["kind"] in ("RayCluster", "RayJob"), path
            if d["kind"] == "RayJob":
                spec = d["spec"]
                assert ENTRY.search(spec["entrypoint"]), path
                runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
                assert runtime_env.pop("working_dir") == "/app", path  # in the image (clusters/Dockerfile), not here
                RuntimeEnv(**runtime_env)
                assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), path
                if "clusterSelector" in spec:
                    assert spec["clusterSelector"]["ray.io/cluster"] in clusters, path
                jobs[path.name] = spec
    assert {"rayjob-tokenize.yaml", "rayjob-filter.yaml", "rayjob-audit.yaml"} <= set(jobs)
    assert "WORKDIR /app" in (CLUSTERS / "Dockerfile").read_text()

    for name, spec in cluster_specs():
        assert spec["rayVersion"] == ray.__version__ and spec["authOptions"] == {"mode": "token"}, name
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", name  # drivers only on the head
        groups = spec.get("workerGroupSpecs", [])
        gpu = [g for g in groups if has_gpu(g)]
        cpu = [g for g in groups if not has_gpu(g)]
        if name == "raycluster.yaml":
            assert cpu and gpu, "the shared cluster needs CPU workers (data jobs) and GPU workers (training)"
        elif name.startswith("rayjob-train-"):
            assert gpu and not cpu, name
        else:
            assert cpu and not gpu, name
        images = {c["image"] for g in [spec["headGroupSpec"], *groups] for c in g["template"]["spec"]["containers"]}
        assert len(images) == 1, (name, images)
    assert len(cluster_specs()) == 1 + 2 + 3  # the RayCluster, tokenize + filter, three training stages
