"""`python -m ser.data dataset=emodb dataset.root=PATH`: summarise a dataset.

Prints per-class and per-speaker counts (expected versus found), duration statistics
from the audio headers and the feature shape. Composes ser/conf/train.yaml like train.py,
so any dataset override that training accepts works here; it writes no files (the
synthetic corpus is generated on first use, as for training).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ser.cli import run_cli
from ser.conf import CONFIG_PATH, ROOT_CONFIG

# A summary is not a run: no output folder, no .hydra/ snapshot, no log file.
SUMMARY_OVERRIDES = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=ROOT_CONFIG)
def main(cfg: DictConfig) -> None:
    from ser.data.summary import summarise_config

    run_cli(summarise_config, cfg)


if __name__ == "__main__":
    # Before the user's overrides, so an explicit hydra.run.dir=... still wins.
    sys.argv[1:1] = SUMMARY_OVERRIDES
    main()
