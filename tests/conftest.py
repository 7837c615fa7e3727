"""Shared fixtures: composed configs shrunk to seconds-long runs on tiny generated data.

Helpers that are not fixtures live in tests/helpers/ (tiny configs: tests/helpers/config.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from tests.helpers.config import TINY, compose_config

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
