"""Numeric settings are checked once, at the start, and a bad one is named (ser.settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ser.cli import run_cli
from ser.settings import SettingError, validate_settings
from ser.training.engine import train
from tests.helpers.config import CONF, ROOT, TINY, compose_config

# The tiny corpus and run, with the user's defaults: progress bar on, W&B offline.
TINY_DEFAULTS = [o for o in TINY if not o.startswith(("progress=", "trainer.max_epochs="))]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.mark.parametrize("setting", ["trainer.max_epochs=-1", "trainer.max_epochs=0"])
def test_train_py_refuses_a_bad_epoch_count_with_default_settings(
    tmp_path: Path, data_dir: Path, setting: str
) -> None:
    # As a user runs it: progress bar and W&B (offline) on. -1 used to train forever and
    # 0 to report an untrained model as results; the timeout turns the first into a failure.
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "train.py", *TINY_DEFAULTS, setting, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120,
    )
    value = setting.split("=")[1]
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"error: trainer.max_epochs={value}: expected a whole number >= 1" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed=abc: expected a whole number in 0..2147483647"),
        ("seed=1.5", "seed=1.5: expected a whole number in 0..2147483647"),
        ("trainer.max_epochs=true", "trainer.max_epochs=true: expected a whole number >= 1"),
        ("model.optimizer.lr=nan", "model.optimizer.lr=nan: expected a number > 0"),
        ("model.optimizer.betas=[0.9,1.0]", "model.optimizer.betas=[0.9, 1.0]: expected a list of 2, each a number >= 0 and < 1"),
        ("fusion.regularizer.rate=1.5", "fusion.regularizer.rate=1.5: expected a number >= 0 and < 1"),
        ("dataset.load_threads=0", "dataset.load_threads=0: expected a whole number >= 1, or null"),
        ("features.sample_rate=100", "features.sample_rate=100: expected a whole number in 1000..384000"),
    ],
)
def test_the_first_bad_setting_is_named_before_anything_runs(
    tiny_config, tmp_path: Path, capsys: pytest.CaptureFixture, override: str, message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli(train, tiny_config(override))
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "run").exists()  # nothing was built or written


def test_the_dataset_summary_checks_its_settings(capsys: pytest.CaptureFixture) -> None:
    from ser.data.summary import summarise_config

    cfg = compose_config(["dataset.batch_size=0", "trainer.max_epochs=-1"])
    with pytest.raises(SystemExit):
        run_cli(summarise_config, cfg)
    # Only the groups a summary uses: the trainer's epochs are not its business.
    assert capsys.readouterr().err.strip() == "error: dataset.batch_size=0: expected a whole number >= 1"


def shipped_configs() -> list[list[str]]:
    """Every dataset, experiment, ablation switch and feature choice the repository ships."""
    names = lambda group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))  # noqa: E731
    configs = [[f"dataset={name}"] for name in names("dataset")]
    # An experiment of a corpus (experiment=paper) needs the corpus chosen.
    configs += [[f"experiment={name}", "dataset=emodb"] for name in names("experiment")]
    configs += [[f"model/{group}={name}"] for group in ("kernels", "se", "regularizer") for name in names(f"model/{group}")]
    configs += [[f"features={name}"] for name in names("features")]
    configs += [["model=timnet"], ["cv=speaker"], ["cv=predefined", "cv.select=best_val_uar"], ["callbacks=early_stopping", "cv.validation=0.1"],
                ["task=cross_corpus", "+dataset@test_dataset=synthetic"], ["debug=fast"]]
    return configs


@pytest.mark.parametrize("overrides", shipped_configs(), ids=" ".join)
def test_every_shipped_config_passes(overrides: list[str]) -> None:
    validate_settings(compose_config(overrides))


def test_unset_mandatory_values_are_left_to_their_own_check() -> None:
    # dataset=timnet_npy has `path: ???`; its DataModule says to pass dataset.path=FILE.
    validate_settings(compose_config(["dataset=timnet_npy"]))
    with pytest.raises(SettingError, match=r"^dataset.batch_size=0: "):
        validate_settings(compose_config(["dataset=timnet_npy", "dataset.batch_size=0"]))
