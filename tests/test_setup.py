"""The install routes agree: pyproject.toml states ranges, constraints.txt the exact releases,
and make, CI and conda install with both; `make train` installs the package alone, `make test`
the dev extra."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from tests.helpers.config import ROOT


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(extra: str) -> list[Requirement]:
    """An extra's requirements, with the extras it names (`ser[a,b]`) expanded."""
    listed = []
    for text in project()["optional-dependencies"][extra]:
        requirement = Requirement(text)
        if requirement.name == "ser":
            for other in sorted(requirement.extras):
                listed += requirements(other)
        else:
            listed.append(requirement)
    return listed


def pins() -> dict[str, str]:
    """constraints.txt: package name -> its exact version."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^=\s]+)", line).groups()
            found[name.lower()] = version
    return found


def test_the_dev_extra_holds_every_extra() -> None:
    dev = {str(r) for r in requirements("dev")}
    for extra in project()["optional-dependencies"]:
        assert {str(r) for r in requirements(extra)} <= dev, f"the dev extra leaves out {extra}"


def test_constraints_pin_every_requirement_within_its_range() -> None:
    """Every package pyproject.toml names, in any extra, is pinned to one release that its
    range accepts; torch and torchaudio at 2.11.0 (the figures' releases)."""
    named = [Requirement(r) for r in project()["dependencies"]] + requirements("dev")
    pinned = pins()
    for requirement in named:
        version = pinned.get(requirement.name.lower())
        assert version is not None, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version} is not {requirement}"
    assert pinned["torch"] == pinned["torchaudio"] == "2.11.0"
    base = {Requirement(r).name: str(Requirement(r).specifier) for r in project()["dependencies"]}
    assert base["torch"] == base["torchaudio"] == "<2.12,>=2.11"  # a range, not a pin


def test_conda_installs_what_make_test_installs() -> None:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-c constraints.txt", "-e .[dev]"]


def dry_run(target: str, venv: Path) -> str:
    """The commands `make TARGET` would run with its virtual environment at `venv`."""
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line and "--upgrade pip" not in line]


def stamp_hash() -> str:
    """The install stamp's checksum, as the Makefile computes it."""
    done = subprocess.run(
        "cat pyproject.toml constraints.txt | cksum", shell=True, cwd=ROOT, capture_output=True, text=True,
    )
    return done.stdout.split()[0]


def test_make_train_installs_the_package_alone_and_make_test_the_dev_extra(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (train,) = installs(dry_run("train", venv))
    assert train.endswith("pip install --quiet -c constraints.txt -e .")
    (test,) = installs(dry_run("test", venv))
    assert test.endswith("pip install --quiet -c constraints.txt -e '.[dev]'")
    # After `make test`, `make train` finds the dev install (a superset) and keeps it...
    (venv / f".installed-dev-{stamp_hash()}").touch()
    assert installs(dry_run("train", venv)) == [] and installs(dry_run("test", venv)) == []
    # ...while after `make train`, `make test` still installs the dev extra.
    (venv / f".installed-dev-{stamp_hash()}").unlink()
    (venv / f".installed-base-{stamp_hash()}").touch()
    assert installs(dry_run("train", venv)) == []
    assert installs(dry_run("test", venv)) == [test]
    # An edited constraints file (or pyproject.toml) makes either install stale.
    (venv / f".installed-base-{stamp_hash()}").rename(venv / ".installed-base-0")
    assert installs(dry_run("train", venv)) == [train]


def test_ci_runs_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
