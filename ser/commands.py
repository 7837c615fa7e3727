"""The package's commands, as console scripts (pyproject.toml's [project.scripts]).

    ser-train       python train.py / python -m ser.training   an experiment (Hydra overrides)
    ser-data        python -m ser.data                         a dataset's summary (Hydra overrides)
    ser-sweep       python sweep.py / python -m ser.sweeps      named sweeps and their reports
    ser-predict     python -m ser.tools.predict                 classify audio with a checkpoint
    ser-export      python -m ser.tools.export                  a checkpoint as ONNX / TorchScript
    ser-complexity  python -m ser.tools.complexity              parameters, MACs, latency per variant
    ser-gather      python -m ser.training.gather               results.json from fold files

Each takes Hydra-style ``key=value`` arguments (ser-sweep: a subcommand, then the Hydra
overrides of its jobs) and answers ``--help``. Each function here imports its command only
when called, so a command starts without loading the others.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ser.cli import hydra_errors_in_one_line, run_cli
from ser.conf import CONFIG_PATH, ROOT_CONFIG

# A summary is not a run: no output folder, no .hydra/ snapshot, no log file.
SUMMARY_OVERRIDES = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=ROOT_CONFIG)
def train_main(cfg: DictConfig) -> float:
    """`ser-train [OVERRIDES]`: the experiment the composed config describes.

    Returns the objective, which a Hydra sweeper (Optuna) maximises.
    """
    from ser.training.engine import train

    return run_cli(train, cfg)


def summarise(cfg: DictConfig) -> object:
    """The summary of the dataset `cfg` describes, its settings typed and checked first
    (as a run checks them: ser.settings), printed and returned."""
    from ser.data.summary import summarise_dataset
    from ser.settings import dataset_settings

    return summarise_dataset(dataset_settings(cfg))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=ROOT_CONFIG)
def summary_main(cfg: DictConfig) -> None:
    """`ser-data [OVERRIDES]`: the summary of the dataset the composed config describes."""
    run_cli(summarise, cfg)


def train() -> None:
    """ser-train"""
    from ser.sweeps.launch import missing_extra

    problem = missing_extra(sys.argv[1:])  # a launcher or sweeper of an extra not installed
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    with hydra_errors_in_one_line():
        train_main()


def data() -> None:
    """ser-data"""
    # Before the user's overrides, so an explicit hydra.run.dir=... still wins.
    sys.argv[1:1] = SUMMARY_OVERRIDES
    with hydra_errors_in_one_line():
        summary_main()


def sweep() -> None:
    """ser-sweep"""
    from ser.sweeps.cli import run

    run()


def predict() -> None:
    """ser-predict"""
    from ser.tools.predict import main

    main()


def export() -> None:
    """ser-export"""
    from ser.tools.export import main

    main()


def complexity() -> None:
    """ser-complexity"""
    from ser.tools.complexity import main

    main()


def gather() -> None:
    """ser-gather"""
    from ser.training.gather import main

    sys.exit(main())
