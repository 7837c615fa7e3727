"""Shared fixtures: composed configs shrunk to seconds-long runs on tiny generated data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "ser" / "conf"

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Overrides that make a full cross-validation run take seconds. End-to-end tests of the
# command line use these alone, so the CLI runs as users run it: progress bar on, W&B
# offline (the default logger; WANDB_MODE=offline above).
TINY_DATA = [
    "dataset.generator.num_speakers=2",
    "dataset.generator.utterances_per_class_per_speaker=2",
    "dataset.signal_length=11025",
    "cv.folds=2",
    "trainer.max_epochs=1",
    "model.net.num_blocks=2",
]
# The same, quiet: for tests that call train() in-process rather than the CLI.
TINY = [*TINY_DATA, "progress=false"]


def cli_environment(**extra: str) -> dict[str, str]:
    """The environment of a CLI run in a test: the user's, with W&B offline and quiet."""
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The root config as `python train.py OVERRIDES` would see it."""
    from ser.conf import compose

    return compose(list(overrides or []))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory per test session, so the tiny corpus is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_config(tmp_path: Path, data_dir: Path):
    """A factory of tiny configs writing into this test's temporary directory."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        cfg = compose_config(TINY + ["logger=none", *overrides])
        with open_dict(cfg):
            cfg.paths.data_dir = str(data_dir)
            cfg.paths.output_dir = str(output_dir or tmp_path / "run")
        return cfg

    return make


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A real `last.ckpt` of a tiny run, trained once per session (inference and export)."""
    from ser.training.engine import train

    cfg = compose_config(TINY + ["logger=none"])
    output_dir = tmp_path_factory.mktemp("trained")
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(output_dir)
    train(cfg)
    return output_dir / "checkpoints" / "fold_00" / "last.ckpt"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
