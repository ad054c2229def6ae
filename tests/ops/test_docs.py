"""The README and docs/ stay navigable: relative links resolve, the module map lists every module."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # [text](target) or [text](target#anchor)
MAPPED = ("tokenization", "filtering", "training", "pipelines", "benchmarks")


def test_relative_links_resolve():
    broken = [
        (page.relative_to(ROOT).as_posix(), target)
        for page in PAGES
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert len(PAGES) > 2 and not broken, f"links to missing files: {broken}"


def test_module_map_lists_every_module_and_only_existing_ones():
    text = (ROOT / "docs" / "modules.md").read_text()
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M))
    modules = {p.relative_to(ROOT).as_posix() for pkg in MAPPED for p in (ROOT / pkg).rglob("*.py")}
    assert not modules - listed, f"docs/modules.md lacks a line for: {sorted(modules - listed)}"
    assert not listed - modules, f"docs/modules.md lists modules that do not exist: {sorted(listed - modules)}"
