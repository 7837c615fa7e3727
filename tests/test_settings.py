"""Numeric settings are checked once, at the start, and a bad one is named (ser.settings).

(Every shipped config option building its typed settings: tests/test_typed_settings.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from ser.cli import run_cli
from ser.settings import ConfigError, SettingError
from ser.training.engine import train
from tests.helpers.cli_runs import selected_cases, started_together
from tests.helpers.config import ROOT, TINY, compose_config, typed_config

# The tiny corpus and run, with the user's defaults: progress bar on, W&B offline.
TINY_DEFAULTS = [o for o in TINY if not o.startswith(("progress=", "trainer.max_epochs="))]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def train_py(setting: str, run_dir: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "train.py", *TINY_DEFAULTS, setting, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def epoch_count_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[dict]:
    """{setting: (run directory, the finished process)} of the test below, both runs started together."""
    def run(setting: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
        run_dir = tmp_path_factory.mktemp("epochs") / "run"
        return run_dir, train_py(setting, run_dir, data_dir)

    settings = selected_cases(request, test_train_py_refuses_a_bad_epoch_count_with_default_settings)
    with started_together({setting: partial(run, setting) for setting in settings}) as runs:
        yield runs


@pytest.mark.parametrize("setting", ["trainer.max_epochs=-1", "trainer.max_epochs=0"])
def test_train_py_refuses_a_bad_epoch_count_with_default_settings(epoch_count_runs: dict, setting: str) -> None:
    # As a user runs it: progress bar and W&B (offline) on. -1 used to train forever and
    # 0 to report an untrained model as results; the timeout turns the first into a failure.
    run_dir, done = epoch_count_runs[setting].result()
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
    from ser.commands import summarise

    cfg = compose_config(["dataset.batch_size=0", "trainer.max_epochs=-1"])
    with pytest.raises(SystemExit):
        run_cli(summarise, cfg)
    # Only the groups a summary uses: the trainer's epochs are not its business.
    assert capsys.readouterr().err.strip() == "error: dataset.batch_size=0: expected a whole number >= 1"


def test_an_unset_mandatory_value_is_named_before_any_range() -> None:
    # dataset=timnet_npy has `path: ???`: named first, as the value to pass.
    with pytest.raises(ConfigError, match=r"^Missing mandatory value: dataset.path$"):
        typed_config(["dataset=timnet_npy", "dataset.corpus=emodb"])
    with pytest.raises(SettingError, match=r"^dataset.batch_size=0: "):
        typed_config(["dataset=timnet_npy", "dataset.corpus=emodb", "dataset.path=x.npy", "dataset.batch_size=0"])
