"""What a run's config defines: the part that changes results, its hash, and where it writes.

The engine's own helpers: they read the composed `DictConfig` (the hash is computed from
it as composed), and `typed_settings` turns it into the typed settings (ser.settings)
that everything below the engine takes, the hash and the defining config included.

The config hash identifies an experiment: a fold file, a results.json and a `last.ckpt`
are reused only by a run with the same hash, and an output directory holding another
hash's results is refused (ser.tracking.output_dir). Settings that say where and how a
run happens, not what it computes, are left out of it, so equal setups in different
directories (or fold-parallel jobs of one experiment) share a hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ser.errors import ConfigError
from ser.settings import Settings, settings_from_config
from ser.training.gather import JOB_CV_KEYS

# Settings proven not to change what is computed, each for a reason; everything else,
# callbacks included (early stopping changes the epochs a fold trains), is part of the hash.
# tests/training/test_config_hash.py changes every other key and every config group option
# and checks the hash changes, and trains with these changed to the same figures.
NON_DEFINING_KEYS = (
    "paths",  # where files go
    "logger",  # where metrics are sent (every fold's history is kept whatever it says)
    "hydra",  # the launcher's own settings
    "progress",  # progress bars
    "plots",  # figures drawn after every fold is finished
    "objective",  # which mean train() returns to a sweeper
)
_WHERE_THE_DATA_IS_READ = ("cache_dir", "num_workers")  # a cache, the loader's processes
NON_DEFINING_NESTED_KEYS = {
    "trainer": ("default_root_dir", "enable_progress_bar"),
    "dataset": _WHERE_THE_DATA_IS_READ,
    "test_dataset": _WHERE_THE_DATA_IS_READ,
}


def defining_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the settings that do not change what is computed."""
    container = OmegaConf.to_container(cfg, resolve=True)
    defining = {k: v for k, v in container.items() if k not in NON_DEFINING_KEYS}
    if isinstance(defining.get("cv"), dict):
        # Which folds a job runs (fold-parallel jobs) is not part of what is computed:
        # every job of one experiment must share its config hash.
        defining["cv"] = {k: v for k, v in defining["cv"].items() if k not in JOB_CV_KEYS}
    # Where files go and how they are read do not change what is computed, so equal
    # setups in different directories share a hash (sweep reports compare them).
    for group, keys in NON_DEFINING_NESTED_KEYS.items():
        if isinstance(defining.get(group), dict):
            defining[group] = {k: v for k, v in defining[group].items() if k not in keys}
    return defining


def config_hash(cfg: DictConfig) -> str:
    """16 hex digits of the sha256 of the defining config."""
    text = json.dumps(defining_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def output_directory(cfg: DictConfig) -> Path:
    """`paths.output_dir`, resolved (Hydra's job directory under train.py)."""
    try:
        return Path(cfg.paths.output_dir).resolve()
    except Exception as error:
        raise ConfigError(
            f"paths.output_dir cannot be resolved ({error}); set it or run through train.py"
        ) from error


def typed_settings(cfg: DictConfig) -> Settings:
    """The typed, checked settings of `cfg` (ser.settings), with its hash and defining config."""
    settings = settings_from_config(cfg)  # checks every setting before the hash resolves them
    return dataclasses.replace(settings, config_hash=config_hash(cfg), run_config=defining_config(cfg))
