"""The library packages import each other without cycles, imports inside functions included.

A deferred import hides a cycle from the interpreter but not from a reader: the modules still
need each other. Parsed with `ast` (nothing is imported), so the test takes well under a second.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tokenization", "filtering", "training", "pipelines")


def module_names() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `name` imports anywhere in its file (a `from pkg import sub` names `pkg.sub`)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `from a.b import name` of a non-module attribute: its module
                t = t.rpartition(".")[0]
            while t:  # importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too
                if t != name and not name.startswith(t + "."):
                    out.add(t)
                t = t.rpartition(".")[0]
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles_deferred_imports_included():
    found = cycles(import_graph())
    assert not found, f"import cycles (imports inside functions count): {found}"


def test_the_graph_sees_deferred_imports():
    graph = import_graph()  # tokenization/units.py is the records every reader yields: it imports no reader
    assert not any(m.startswith("tokenization.readers") for m in graph["tokenization.units"])
    assert "filtering.asr" in graph["pipelines.args"]  # imported inside `add_asr_args` only


@pytest.mark.parametrize("package, forbidden", [("training", "filtering"), ("tokenization", "filtering"),
                                                ("tokenization", "training"), ("filtering", "training"),
                                                ("tokenization", "pipelines"), ("filtering", "pipelines"),
                                                ("training", "pipelines")])
def test_no_import_runs_up_a_floor(package, forbidden):
    """The floors only point down: `training/` imports nothing from `filtering/`; no library imports `pipelines/`."""
    bad = {f"{m}: {d}" for m, deps in import_graph().items() if m.split(".")[0] == package
           for d in deps if d.split(".")[0] == forbidden}
    assert not bad, f"{package}/ must not import {forbidden}/: {sorted(bad)}"


def test_codec_interface_imports_no_backend():
    """`codec.py` <- `mimi_codec.py` <- `codec_factory.py`: only the factory picks backends."""
    graph = import_graph()
    assert not {m for m in graph["tokenization.codec"] if m.startswith("tokenization")}
    assert "tokenization.codec_factory" not in graph["tokenization.mimi_codec"]
