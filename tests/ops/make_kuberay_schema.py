"""Regenerate `kuberay_schema.json`: the RayJob/RayCluster `openAPIV3Schema`s our manifests are checked against.

Kept small: descriptions dropped, `status` dropped (never written by us), the RayJob's
`rayClusterSpec` shared with the RayCluster's `spec`, and every subtree that repeats (pod
templates, containers) stored once under `$defs` and referenced. The validation semantics are
the CRDs' own, untouched.

    git clone --branch v1.7.0 https://github.com/ray-project/kuberay /tmp/kuberay
    python tests/ops/make_kuberay_schema.py /tmp/kuberay v1.7.0
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import yaml

OUT = Path(__file__).with_name("kuberay_schema.json")
CRDS = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
MIN_SHARED_CHARS = 1500  # subtrees smaller than this stay inline


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _key(node) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def _subtrees(node, out: Counter) -> None:
    if isinstance(node, dict):
        if "type" in node or "properties" in node:
            out[_key(node)] += 1
        for v in node.values():
            _subtrees(v, out)
    elif isinstance(node, list):
        for v in node:
            _subtrees(v, out)


def _hoist(node, defs: dict, names: dict):
    if isinstance(node, dict):
        k = _key(node)
        if k in names:
            return {"$ref": f"#/$defs/{names[k]}"}
        return {key: _hoist(v, defs, names) for key, v in node.items()}
    if isinstance(node, list):
        return [_hoist(v, defs, names) for v in node]
    return node


def build(crd_dir: Path, version: str) -> dict:
    kinds = {}
    for kind, name in CRDS.items():
        crd = yaml.safe_load((crd_dir / name).read_text())
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = _strip(v1["schema"]["openAPIV3Schema"])
        schema["properties"].pop("status", None)
        kinds[kind] = schema
    cluster_spec = kinds["RayCluster"]["properties"]["spec"]
    assert kinds["RayJob"]["properties"]["spec"]["properties"]["rayClusterSpec"] == cluster_spec
    kinds["RayJob"]["properties"]["spec"]["properties"]["rayClusterSpec"] = {"$ref": "#/$defs/RayClusterSpec"}
    kinds["RayCluster"]["properties"]["spec"] = {"$ref": "#/$defs/RayClusterSpec"}
    counts: Counter = Counter()
    _subtrees([cluster_spec, kinds], counts)
    shared = sorted((k for k, n in counts.items() if n > 1 and len(k) >= MIN_SHARED_CHARS), key=len, reverse=True)
    names = {k: "s" + hashlib.sha1(k.encode()).hexdigest()[:10] for k in shared}
    defs: dict = {}
    for k in shared:  # largest first: a hoisted subtree refers to smaller hoisted ones inside it
        defs[names[k]] = _hoist(json.loads(k), defs, {kk: n for kk, n in names.items() if kk != k})
    defs["RayClusterSpec"] = _hoist(cluster_spec, defs, names)
    kinds = _hoist(kinds, defs, names)
    return {"kuberay_version": version, "source": "ray-operator/config/crd/bases/ (ray.io/v1)", "kinds": kinds, "$defs": defs}


if __name__ == "__main__":
    repo, version = Path(sys.argv[1]), sys.argv[2]
    OUT.write_text(json.dumps(build(repo / "ray-operator/config/crd/bases", version), sort_keys=True, separators=(",", ":")) + "\n")
    print(OUT, OUT.stat().st_size, "bytes")
