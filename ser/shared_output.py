"""A Hydra callback that refuses a multirun into another configuration's output directory.

Each job of a multirun checks its own output directory before writing (ser.tracking.output_dir). When
every job shares one directory, the sweep directory itself (`+parallel=folds`,
ser/conf/parallel/folds.yaml), Hydra writes `multirun.yaml` into it before any job starts;
this callback checks that directory first, in `on_multirun_start`, with the config hash
the jobs will have (they differ only in `cv.only_folds`, which is not hashed).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from ser.tracking.output_dir import OutputDirectoryError, check_unclaimed


def shared_output(config: DictConfig) -> tuple[Path, str] | None:
    """(the output directory every job of this multirun writes into, their config hash).

    None when each job has its own (`paths.output_dir` follows the job's
    `hydra.runtime.output_dir`, unknown before the job runs) or the config cannot be
    resolved yet (the jobs then report what is wrong).
    """
    instance = HydraConfig.instance()
    previous = instance.cfg
    job = copy.deepcopy(config)
    try:
        instance.set_config(job)  # what ${hydra:...} reads, as in a job
        with read_write(job), open_dict(job):
            del job["hydra"]
        output_dir = job.paths.output_dir
        if output_dir is None:
            return None
        # The driver's hash (torch and Lightning come with it): only for a shared directory.
        from ser.training.config import config_hash

        return Path(str(output_dir)).resolve(), config_hash(job)
    except (OmegaConfBaseException, ValueError):
        return None
    finally:
        instance.cfg = previous


class SharedOutputGuard(Callback):
    """Stop a multirun (exit code 2) before it writes into a directory it must not use."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        shared = shared_output(config)
        if shared is None:
            return
        try:
            check_unclaimed(*shared)
        except OutputDirectoryError as error:
            # Hydra turns a callback's exception into a warning and goes on: exit instead.
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
