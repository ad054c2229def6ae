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
    pages = sorted((ROOT / "docs").glob("*.md"))  # the reference pages name configs too
    texts = {p: p.read_text() for p in [*YAMLS, CLUSTERS / "README.md", CLUSTERS / "Dockerfile", ROOT / "README.md", *pages]}
    named = {(p.name, m) for p, t in texts.items() for m in REPO_PATH.findall(t)}
    assert any(m.startswith("training/configs/") for _, m in named) and any(m.endswith(".json") for _, m in named)
    missing = [(where, m) for where, m in named if not (ROOT / m).exists()]
    assert not missing, f"named but not in the repo: {missing}"
    for path in (ROOT / "training" / "configs").glob("ds_*.json"):  # every DeepSpeed JSON, beside the stage YAMLs
        ds = json.loads(path.read_text())
        assert ds["zero_optimization"]["stage"] in (2, 3)
    # `deepspeed=...` overrides resolve from training/configs/
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


# ---- KubeRay: what the API server and the operator accept (KubeRay v1.7.0) -------------------
KUBERAY_SCHEMA = Path(__file__).with_name("kuberay_schema.json")  # regenerate: tests/ops/make_kuberay_schema.py
OBJECT_META = {"type": "object", "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}
MAX_NAME = {"RayCluster": 53, "RayJob": 53 - 6}  # ray-operator utils/constant.go: Max{RayCluster,RayJob}NameLength
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?$")
GROUP_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")  # validateRayGroupResources


def strict(node):
    """The CRD schema as `kubectl apply` (strict field validation) reads it: unknown fields are errors
    wherever the schema lists properties and does not keep unknown fields."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def kuberay_validator(kind: str):
    import jsonschema

    stored = json.loads(KUBERAY_SCHEMA.read_text())
    assert stored["kuberay_version"] == "v1.7.0"
    schema = strict({**stored["kinds"][kind], "$defs": stored["$defs"]})
    schema["properties"]["metadata"] = strict(OBJECT_META)
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft202012Validator(schema)


def operator_problems(doc: dict) -> list[str]:
    """The ray-operator v1.7.0 checks (controllers/ray/utils/validation.go) that can reject our manifests,
    plus Kubernetes' own pod rules that volume names are unique and a mount names a volume of its pod."""
    kind, spec, name = doc["kind"], doc["spec"], doc["metadata"]["name"]
    problems = []
    if len(name) > MAX_NAME[kind] or not DNS1035.match(name):
        problems.append(f"name {name!r}: a DNS-1035 label of at most {MAX_NAME[kind]} characters")
    cluster = spec if kind == "RayCluster" else spec.get("rayClusterSpec")
    if kind == "RayJob":
        if not spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished", 0) > 0:
            problems.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true")
        if spec.get("ttlSecondsAfterFinished", 0) < 0 or spec.get("backoffLimit", 0) < 0:
            problems.append("ttlSecondsAfterFinished and backoffLimit must be non-negative")
        if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
            problems.append("suspend needs shutdownAfterJobFinishes: true")
        selector = spec.get("clusterSelector")
        if cluster is None and not selector:
            problems.append("one of rayClusterSpec or clusterSelector must be set")
        if selector:
            if not selector.get("ray.io/cluster"):
                problems.append("clusterSelector needs ray.io/cluster")
            if spec.get("backoffLimit", 0) > 0:
                problems.append("backoffLimit is incompatible with clusterSelector")
        for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
            if key in spec and spec[key] <= 0:
                problems.append(f"{key} must be positive")
        try:
            yaml.safe_load(spec.get("runtimeEnvYAML", ""))
        except yaml.YAMLError as exc:
            problems.append(f"runtimeEnvYAML is not YAML: {exc}")
    if cluster is None:
        return problems
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
    for gname, group in groups:
        pod = group["template"]["spec"]
        if not pod.get("containers"):
            problems.append(f"{gname}: at least one container")
        if group.get("resources") and any(k in group.get("rayStartParams", {}) for k in GROUP_RESOURCE_PARAMS):
            problems.append(f"{gname}: resources in both rayStartParams and resources")
        if "labels" in group.get("rayStartParams", {}):
            problems.append(f"{gname}: rayStartParams['labels'] is not supported")
        names = [v["name"] for v in pod.get("volumes", [])]
        volumes = set(names)
        if len(volumes) < len(names):
            problems.append(f"{gname}: duplicate volume names {sorted(n for n in volumes if names.count(n) > 1)}")
        for c in pod.get("containers", []):
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problems.append(f"{gname}: container {c['name']} mounts volume {m['name']!r}, which its pod does not define")
        if gname != "head":
            lo, hi = group.get("minReplicas"), group.get("maxReplicas")
            if not autoscaling and (lo is None or hi is None):
                problems.append(f"{gname}: minReplicas and maxReplicas are required without autoscaling")
            if (lo is not None and lo < 0) or (hi is not None and hi < 0) or (None not in (lo, hi) and lo > hi):
                problems.append(f"{gname}: 0 <= minReplicas <= maxReplicas")
    if cluster.get("authOptions", {}).get("mode") == "token":
        version = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)\.(\d+)", cluster.get("rayVersion", "0.0.0")).groups())
        if version < (2, 52, 0):
            problems.append("authOptions.mode token needs rayVersion >= 2.52.0")
    return problems


def test_kuberay_manifests_pass_the_crd_schema_strictly_and_the_operator_rules():
    validators = {kind: kuberay_validator(kind) for kind in ("RayJob", "RayCluster")}
    found = []
    for path in KUBERAY:
        for d in docs(path):
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[d["kind"]].iter_errors(d)]
            found += [f"{path.name}: {e}" for e in errors + operator_problems(d)]
    assert not found, "\n".join(found)


def test_kuberay_checks_catch_what_the_operator_and_api_server_reject():
    """The checks above can fail: each broken copy of a shipped manifest is caught, with a reason."""
    import copy

    audit, = docs(CLUSTERS / "kuberay" / "rayjob-audit.yaml")
    tokenize, = docs(CLUSTERS / "kuberay" / "rayjob-tokenize.yaml")
    job_schema = kuberay_validator("RayJob")

    def errors(doc):
        return [e.message for e in job_schema.iter_errors(doc)] + operator_problems(doc)

    assert errors(audit) == [] and errors(tokenize) == []
    ttl_only = copy.deepcopy(audit)
    ttl_only["spec"]["ttlSecondsAfterFinished"] = 3600  # what main shipped
    assert errors(ttl_only) == ["ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true"]
    typo = copy.deepcopy(tokenize)
    typo["spec"]["shutdownAfterJobFinish"] = True
    typo["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert sorted(m.split("(")[1].split(" ")[0] for m in errors(typo)) == ["'shutdownAfterJobFinish'", "'volumeMount'"]
    wrong_type = copy.deepcopy(tokenize)
    wrong_type["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "8"
    assert errors(wrong_type) == ["'8' is not of type 'integer'"]
    unmounted = copy.deepcopy(tokenize)
    unmounted["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"] = []
    unmounted["spec"]["clusterSelector"] = {"ray.io/cluster": "vocalnet"}
    twice = copy.deepcopy(tokenize)
    pod = twice["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    pod["volumes"] *= 2
    assert errors(twice) == ["head: duplicate volume names ['models']"]
    assert errors(unmounted) == ["backoffLimit is incompatible with clusterSelector",
                                 "cpu-workers: container ray-worker mounts volume 'models', which its pod does not define"]


def local_paths(text: str) -> list[str]:
    """Absolute local paths in a command line or config value: `/models/x`, `--codec=/m`, `faster-whisper:/m`;
    URIs (`s3://...`) are not local."""
    out = []
    for token in shlex.split(text):
        for part in re.split(r"[=,\[\]\s]", token):
            if "://" in part:
                continue
            if ":/" in part:
                part = part.split(":", 1)[1]
            if part.startswith("/"):
                out.append(part)
    return out


def mounted_everywhere(spec: dict, path: str) -> list[str]:
    """The groups (head first) of a cluster spec on whose pods `path` is not under a mounted volume."""
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    missing = []
    for gname, group in groups:
        pod = group["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        mounts = [m["mountPath"].rstrip("/") + "/" for c in pod["containers"] for m in c.get("volumeMounts", [])
                  if m["name"] in volumes]
        if not any((path.rstrip("/") + "/").startswith(m) for m in mounts):
            missing.append(gname)
    return missing


def test_kuberay_jobs_read_only_mounted_paths_or_s3_and_training_reads_what_data_jobs_write():
    from tokenization.schema import KEPT, SHARDS
    from training.stage_config import load_config

    outputs, problems, train_data = {}, [], {}
    shared = {d["metadata"]["name"]: d["spec"] for p in KUBERAY for d in docs(p) if d["kind"] == "RayCluster"}
    for path in KUBERAY:
        for d in docs(path):
            if d["kind"] != "RayJob":
                continue
            spec = d["spec"]
            cluster = spec.get("rayClusterSpec") or shared[spec["clusterSelector"]["ray.io/cluster"]]
            args = shlex.split(spec["entrypoint"])
            module = args[2]
            paths = local_paths(spec["entrypoint"])
            if module == "pipelines.train":
                stage, config = int(args[args.index("--stage") + 1]), args[args.index("--config") + 1]
                cfg = load_config(str(ROOT / config), [a for a in args if "=" in a and not a.startswith("-")], stage=stage)
                # paths inside the repo are the job's working_dir (/app in the image), not a mount
                values = [v for v in strings(cfg.to_dict()) if not v.startswith((str(ROOT), "training/", "clusters/"))]
                paths += [p for v in values for p in local_paths(v)]
                train_data[stage] = cfg.data.path
            if module in ("pipelines.tokenize", "pipelines.filter"):
                outputs[module] = args[args.index("--output") + 1]
            for p in paths:
                where = mounted_everywhere(cluster, p)
                if where:
                    problems.append(f"{path.name}: {p} is read locally but not mounted on {where}")
    assert not problems, "\n".join(problems)
    assert all(o.startswith("s3://") for o in outputs.values()), outputs
    assert train_data == {1: f"{outputs['pipelines.tokenize']}/{SHARDS}",
                          2: f"{outputs['pipelines.filter']}/{KEPT}", 3: f"{outputs['pipelines.filter']}/{KEPT}"}


def test_path_rule_catches_a_path_only_the_workers_mount():
    tokenize, = docs(CLUSTERS / "kuberay" / "rayjob-tokenize.yaml")
    spec = tokenize["spec"]["rayClusterSpec"]
    assert local_paths(tokenize["spec"]["entrypoint"]) == ["/models/mimi"]
    assert local_paths("--asr faster-whisper:/models/w --x=/data/a s3://b/c init_from=[/e/x]") == ["/models/w", "/data/a", "/e/x"]
    assert mounted_everywhere(spec, "/models/mimi") == []
    assert mounted_everywhere(spec, "/data/tokens") == ["head", "cpu-workers"]
    spec["headGroupSpec"]["template"]["spec"].pop("volumes")  # as main shipped it: workers only
    assert mounted_everywhere(spec, "/models/mimi") == ["head"]
