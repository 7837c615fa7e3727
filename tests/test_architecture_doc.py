"""docs/ARCHITECTURE.md is true to the tree: every module of ser/ (and of benchmarks/, the
developers' tools beside it) has its line, and every path the page names exists."""

from __future__ import annotations

import re

from tests.helpers.config import ROOT

DOC = ROOT / "docs" / "ARCHITECTURE.md"
# A repository path in backticks: `ser/...`, `tests/...`, `docs/...`, `hydra_plugins/...`,
# `benchmarks/...`.
PATH = re.compile(r"`((?:ser|tests|docs|hydra_plugins|benchmarks)/[\w./-]*)`")


def named_paths() -> set[str]:
    return set(PATH.findall(DOC.read_text()))


def test_every_module_has_its_line() -> None:
    rows = {
        match.group(1)
        for line in DOC.read_text().splitlines()
        if (match := re.match(r"^\| `([\w./-]+\.py)` \|", line))
    }
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in ("ser", "hydra_plugins", "benchmarks")
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    modules.discard("hydra_plugins/ser_sweepers/__init__.py")  # a namespace marker
    assert sorted(modules - rows) == [], "modules without a line in docs/ARCHITECTURE.md"
    assert sorted(rows - modules) == [], "lines for modules that do not exist"


def test_every_named_path_exists() -> None:
    paths = named_paths()
    assert len(paths) > 50
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert missing == [], "paths in docs/ARCHITECTURE.md that do not exist"
