"""What produced a result: package versions, git commit, machine, and the Hydra job.

The Hydra job's choices and overrides (`hydra_job_info`) go into results.json so that a
sweep report can tell the variants of a sweep apart (ser.sweeps.report).
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PACKAGES = (
    "ser", "torch", "torchaudio", "pytorch-lightning", "torchmetrics", "hydra-core",
    "omegaconf", "wandb", "numpy", "scikit-learn", "scipy", "soundfile",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, str | bool | None]:
    """The commit of the checkout the package runs from, and whether it had local edits."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine() -> dict[str, str | int | None]:
    import os

    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def hydra_job_info() -> dict[str, Any]:
    """The current Hydra job's group choices, task overrides and job number.

    Empty when ``train()`` is called without Hydra (tests, notebooks). Choices of
    Hydra's own groups (``hydra/launcher`` ...) are left out: they say how a run was
    launched, not what it computed.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {"choices": {}, "overrides": [], "job_num": None}
    hydra_cfg = HydraConfig.get()
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
    assert isinstance(choices, dict)
    job_num = OmegaConf.select(hydra_cfg, "job.num", default=None, throw_on_missing=False)
    return {
        "choices": {str(k): v for k, v in choices.items() if k != "hydra" and not str(k).startswith("hydra/")},
        "overrides": [str(o) for o in hydra_cfg.overrides.task],
        "job_num": int(job_num) if hydra_cfg.mode.name == "MULTIRUN" and job_num is not None else None,
    }


def sweep_name() -> str | None:
    """The sweep a job belongs to: the named sweep (`sweep=ablation`), else the folder of
    a multirun (`hydra.sweep.dir`'s name); None for a single run or without Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    named = hydra_cfg.runtime.choices.get("sweep")
    if named:
        return str(named)
    if hydra_cfg.mode.name == "MULTIRUN":
        return Path(str(hydra_cfg.sweep.dir)).name
    return None
