"""Named sweeps (ser/conf/sweep/*.yaml) run through Hydra multirun.

A sweep is an ordinary Hydra config group: ``ser/conf/sweep/NAME.yaml`` (``@package
_global_``) sets ``hydra.sweeper.params`` (and for ``hpo`` the Optuna sweeper), so
``python sweep.py run NAME ARGS`` is ``python train.py --multirun +sweep=NAME ARGS``: the
launcher, the sweeper and any extra override come from the command line as usual.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ser
from ser.conf import group_files
from ser.errors import ConfigError

SWEEP_GROUP = "sweep"
# The training command as a module, so that an installed package needs no checkout.
TRAIN_MODULE = "ser.training"

# sweep.py sets this; the SweepDirectory callback (ser.sweeps.callbacks) writes the
# resolved sweep directory into the file.
SWEEP_DIR_FILE_ENV = "SER_SWEEP_DIR_FILE"


def available_sweeps() -> dict[str, str]:
    """Sweep names and the first line of each file's description comment."""
    sweeps = {}
    for path in group_files(SWEEP_GROUP):
        lines = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
        description = next((line for line in lines if line and not line.startswith("@package")), "")
        sweeps[path.name.removesuffix(".yaml")] = description
    return sweeps


# Hydra plugins that come with an optional extra of the package:
# (config group, option) -> (the plugin's module, the extra that installs it).
OPTIONAL_PLUGINS = {
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "cluster"),
    ("hydra/launcher", "parallel"): ("hydra_plugins.hydra_joblib_launcher", "cluster"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
}


def chosen_plugins(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """The (group, option) pairs of Hydra's sweeper and launcher that ``overrides`` choose,
    directly (``hydra/launcher=slurm``) or through a named sweep (``+sweep=hpo``)."""
    chosen = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in ("hydra/sweeper", "hydra/launcher"):
            chosen.append((key, value))
        elif key == SWEEP_GROUP:
            path = next((p for p in group_files(SWEEP_GROUP) if p.name == f"{value}.yaml"), None)
            lines = path.read_text().splitlines() if path else []
            for line in lines:
                group, _, option = line.strip().removeprefix("- override /").partition(":")
                if line.strip().startswith("- override /") and group in ("hydra/sweeper", "hydra/launcher"):
                    chosen.append((group, option.strip()))
    return chosen


def missing_extra(overrides: Sequence[str]) -> str | None:
    """What to install when ``overrides`` choose a sweeper or launcher of an extra that is
    not installed (one line, said before Hydra fails on it with a composition error)."""
    for group, option in chosen_plugins(overrides):
        module, extra = OPTIONAL_PLUGINS.get((group, option), (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            kind = group.rsplit("/", 1)[1]
            return f"{group}={option}: the {option} {kind} is not installed: pip install 'ser[{extra}]'"
    return None


def check_plugins(overrides: Sequence[str]) -> None:
    """ConfigError (see `missing_extra`) when ``overrides`` need an extra that is missing."""
    problem = missing_extra(overrides)
    if problem:
        raise ConfigError(problem)


def sweep_command(name: str, overrides: Sequence[str], python: str = sys.executable) -> list[str]:
    """The ``python -m ser.training --multirun`` command line that runs sweep ``name``."""
    sweeps = available_sweeps()
    if name not in sweeps:
        raise ConfigError(f"unknown sweep {name!r}; available: {', '.join(sweeps)}")
    check_plugins([f"+sweep={name}", *overrides])
    return [python, "-m", TRAIN_MODULE, "--multirun", f"+sweep={name}", *overrides]


def sweep_environment(marker: str) -> dict[str, str]:
    """The sweep's environment: this one, the marker file, and this very `ser` importable.

    The folder that holds the running `ser` package goes first on PYTHONPATH, so the
    sweep runs the same code as the command that started it, from any directory, whether
    `ser` is installed or run from a checkout.
    """
    home = str(Path(ser.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, SWEEP_DIR_FILE_ENV: marker, "PYTHONPATH": path}


def run_sweep(name: str, overrides: Sequence[str], python: str = sys.executable) -> tuple[int, Path | None]:
    """Run sweep ``name`` with extra Hydra ``overrides``; return (exit code, sweep directory).

    The sweep directory is the one Hydra resolved (from ser/conf/sweep/NAME.yaml unless
    ``hydra.sweep.dir=...`` is among the overrides); None if the sweep never started.
    """
    command = sweep_command(name, overrides, python)
    print("+ " + shlex.join(command), flush=True)
    handle, marker = tempfile.mkstemp(prefix="ser-sweep-dir-", suffix=".txt")
    os.close(handle)
    try:
        code = subprocess.call(command, env=sweep_environment(marker))
        text = Path(marker).read_text().strip()
    finally:
        os.unlink(marker)
    return code, Path(text) if text else None
