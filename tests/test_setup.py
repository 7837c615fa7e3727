"""The two install routes (pip via pyproject.toml, conda via environment.yml) agree."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.helpers.config import ROOT


def normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def requirements(project: dict, extra: str) -> list[str]:
    """An extra's requirements, with the extras it names (`ser[a,b]`) expanded."""
    listed = []
    for requirement in project["optional-dependencies"][extra]:
        named = re.fullmatch(r"ser\[([\w,\s-]+)\]", requirement.strip())
        if named:
            for other in named.group(1).split(","):
                listed += requirements(project, other.strip())
        else:
            listed.append(requirement)
    return listed


def test_environment_yml_has_the_same_pins_as_pyproject() -> None:
    """The conda environment is the development one: the dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {normalise(r) for r in project["dependencies"] + requirements(project, "dev")}
    extras = {normalise(r) for extra in project["optional-dependencies"] for r in requirements(project, extra)}
    assert extras <= wanted, "an extra that the dev extra (and so make test) leaves out"
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    listed = {normalise(r) for r in pip_section if not r.startswith("-e")}
    assert listed == wanted


def test_ci_runs_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in script
