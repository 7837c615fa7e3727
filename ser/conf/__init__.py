"""The Hydra configs of `ser`, shipped inside the package (`pkg://ser.conf`).

`train.yaml` is the root config of `python train.py`; the folders beside it are its
config groups. Every reader (train.py, `python -m ser.data`, the sweeps, the complexity
report, the tests) finds them through this package, never through a path relative to a
checkout, so an installed `ser` carries its configs with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING

from ser.settings.data import register_schemas

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONFIG_MODULE = __name__
# What `@hydra.main(config_path=...)` takes.
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
ROOT_CONFIG = "train"

# The groups' schemas (ser.settings.data), which their options name in their defaults
# lists: registered before any reader composes a config, since every reader finds the
# configs through this package.
register_schemas()


def group_files(group: str) -> list[Traversable]:
    """The option files of a config group (e.g. "sweep"), sorted by name."""
    folder = resources.files(CONFIG_MODULE) / group
    return sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def compose(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The root config as `python train.py OVERRIDES` composes it, outside a Hydra run."""
    from hydra import compose as compose_config
    from hydra import initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose_config(
            ROOT_CONFIG, overrides=list(overrides), return_hydra_config=return_hydra_config
        )
