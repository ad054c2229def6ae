"""The floors only point down: `training/` imports nothing from `filtering/`, no library imports `pipelines/`;
the codec interface imports no backend (only `tokenization.codec_factory` picks them).

Read from each module's `ast`, imports inside functions included (a deferred import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement anywhere in `path` names (`from a.b import c` -> `a.b`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("package, forbidden", [("training", "filtering"), ("tokenization", "filtering"),
                                                ("tokenization", "training"), ("filtering", "training"),
                                                ("tokenization", "pipelines"), ("filtering", "pipelines"),
                                                ("training", "pipelines")])
def test_no_import_runs_up_a_floor(package, forbidden):
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / package).rglob("*.py"))
           for m in imported_modules(p) if m == forbidden or m.startswith(forbidden + ".")}
    assert not bad, f"{package}/ must not import {forbidden}/: {sorted(bad)}"


def test_codec_interface_imports_no_backend():
    """`codec.py` <- `mimi_codec.py` <- `codec_factory.py`: no cycle, deferred imports included."""
    assert not {m for m in imported_modules(ROOT / "tokenization" / "codec.py") if m.startswith("tokenization")}
    assert imported_modules(ROOT / "tokenization" / "mimi_codec.py") & {"tokenization.codec_factory"} == set()
