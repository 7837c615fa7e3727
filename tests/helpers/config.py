"""Tiny configs: the root config as train.py composes it, shrunk to seconds-long runs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from ser.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "ser" / "conf"

# Overrides that make a full cross-validation run take seconds. End-to-end tests of the
# command line use these alone, so the CLI runs as users run it: progress bar on, W&B
# offline (the default logger; WANDB_MODE=offline, tests/conftest.py).
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
    """The environment of a CLI run in a test: the user's, with W&B offline and quiet.

    Without WANDB_SERVICE: once a test has used W&B in the pytest process, wandb puts its
    service's address there, and every child would share that service, as a user's
    separate runs never do. A killed run's W&B run would then stay registered in it, and
    its resumed fold, continuing the same run id, would be refused as "in use".
    """
    inherited = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    return {**inherited, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The root config as `python train.py OVERRIDES` would see it."""
    from ser.conf import compose

    return compose(list(overrides or []))


def typed(cfg: DictConfig) -> Settings:
    """The typed settings the engine makes of `cfg` (ser.training.config.typed_settings)."""
    from ser.training.config import typed_settings

    return typed_settings(cfg)


def typed_config(overrides: list[str] | None = None, output_dir: str = "unused-output-dir") -> Settings:
    """The typed settings of `python train.py OVERRIDES` (paths.output_dir set: outside a
    Hydra run, `${hydra:runtime.output_dir}` does not resolve; nothing is written there)."""
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = output_dir
    return typed(cfg)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train tiny models on one thread: on shared, busy cores the second thread of each
    tiny op waits for a core and a seconds-long run takes a minute."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
