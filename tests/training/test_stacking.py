"""cv.stack: folds trained together in one Trainer get, each, the figures and the records
they get trained one after another (deterministic CPU training: the same numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytorch_lightning.loggers.logger import Logger

from ser.tracking import wandb_runs
from ser.tracking.history import read_history
from ser.tracking.results import fold_path, read_json
from ser.training.checkpoint import load_dict
from ser.training.engine import train
from tests.helpers.config import one_torch_thread
from tests.helpers.stacking import assert_weights_agree, same_figure

# What a fold's record holds that depends on the time it took, not on what it computed.
TIMINGS = ("seconds", "fit_seconds")
# Three folds of the 28-utterance corpus train on 18, 19 and 19 rows: in batches of 5, the
# folds' last batches (3, 4, 4) differ in size, so a step runs sub-groups.
UNEQUAL_FOLDS = ["cv.folds=3", "dataset.batch_size=5"]
# Speaker folds with half of each training fold for validation (14 rows: 7 and 7).
VALIDATION = ["cv=speaker", "cv.folds=null", "cv.validation=0.5"]


class CallRecorder(Logger):
    """A fold's logger that keeps every call Lightning (or a stacked run) makes on it."""

    def __init__(self, fold: int, calls: dict[int, list]) -> None:
        super().__init__()
        self.fold = fold
        self.calls = calls.setdefault(fold, [])

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return self.fold

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("hyperparams", sorted(params)))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append(("metrics", step, sorted(metrics), [metrics[key] for key in sorted(metrics)]))

    def finalize(self, status: str) -> None:
        self.calls.append(("finalize", status))


def run_both_ways(
    tiny_config, tmp_path: Path, monkeypatch, *overrides: str, data_dir: Path | None = None
) -> dict[str, Any]:
    """The run of `overrides` one fold after another and stacked: output dirs and logger
    calls. `data_dir`: a corpus of its own (other generator settings)."""
    real = wandb_runs.fold_loggers
    outcome: dict[str, Any] = {}
    for stack in ("false", "true"):
        calls: dict[int, list] = {}

        def recorded(logger_cfg, experiment, fold, *args, calls=calls, **kwargs):
            return [*real(logger_cfg, experiment, fold, *args, **kwargs), CallRecorder(fold, calls)]

        monkeypatch.setattr(wandb_runs, "fold_loggers", recorded)
        output = tmp_path / f"stack-{stack}"
        cfg = tiny_config("trainer.deterministic=true", f"cv.stack={stack}", *overrides, output_dir=output)
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
        with one_torch_thread():
            train(cfg)
        outcome[stack] = {"dir": output, "calls": calls, "record": read_json(output / "results.json")}
    return outcome


def assert_each_fold_as_alone(outcome: dict[str, Any]) -> None:
    alone, stacked = outcome["false"], outcome["true"]
    assert stacked["record"]["stacked"] is True and alone["record"]["stacked"] is False
    assert len(stacked["record"]["folds"]) == len(alone["record"]["folds"])
    for ours, theirs in zip(stacked["record"]["folds"], alone["record"]["folds"], strict=True):
        assert set(ours) == set(theirs)  # the same fields
        for key in set(theirs) - set(TIMINGS):  # floats within fp32 tolerance, the rest exactly
            assert same_figure(key, ours[key], theirs[key]), (key, ours[key], theirs[key])
        fold = ours["fold"]
        assert read_json(fold_path(stacked["dir"], fold)) == {
            "config_hash": stacked["record"]["config_hash"], "data_hash": stacked["record"]["data_hash"],
            "result": ours,
        }
        history = [read_history(run["dir"], fold) for run in (stacked, alone)]
        assert [e["epoch"] for e in history[0]["epochs"]] == list(range(theirs["epochs"]))
        for mine, other in zip(history[0]["epochs"], history[1]["epochs"], strict=True):
            assert mine.keys() == other.keys()
            assert all(same_figure(key, mine[key], other[key]) for key in other), (mine, other)
        weights = [load_dict(run["dir"] / f"checkpoints/fold_{fold:02d}/last.ckpt") for run in (stacked, alone)]
        assert_weights_agree(*weights)
        # Adam's state per parameter (its step count included) is what the fold alone has.
        states = [w["optimizer_states"][0]["state"] for w in weights]
        assert states[0].keys() == states[1].keys()
        for index, state in states[1].items():
            assert float(states[0][index]["step"]) == float(state["step"])
    # Every logger of a fold gets the same calls: hyperparameters, each epoch's figures at
    # the same step, the test's figures, the ends of fit and test.
    assert stacked["calls"].keys() == alone["calls"].keys()
    for fold, theirs in alone["calls"].items():
        ours = stacked["calls"][fold]
        assert [call[:3] for call in ours] == [call[:3] for call in theirs], fold
        for mine, other in zip(ours, theirs, strict=True):
            if mine[0] == "metrics":
                pairs = zip(mine[2], mine[3], other[3], strict=True)
                assert all(same_figure(key, a, b) for key, a, b in pairs), (fold, mine, other)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(["model=mssenet", *UNEQUAL_FOLDS], id="mssenet"),
        pytest.param(["model=timnet", *UNEQUAL_FOLDS], id="timnet"),
        pytest.param(["model=mssenet", *VALIDATION, "cv.select=best_val_uar"], id="mssenet-validation"),
        pytest.param(["model=timnet", *VALIDATION], id="timnet-validation"),
    ],
)
def test_each_fold_gets_the_figures_it_gets_alone(tiny_config, tmp_path, monkeypatch, overrides) -> None:
    outcome = run_both_ways(tiny_config, tmp_path, monkeypatch, "trainer.max_epochs=2", *overrides)
    assert_each_fold_as_alone(outcome)


@pytest.mark.slow
def test_early_stopping_stops_each_fold_where_it_stops_alone(tiny_config, tmp_path, monkeypatch) -> None:
    # A corpus of 56 utterances: two folds of 28 training rows, half of them validation;
    # with these seeds fold 0 stops after 2 epochs, fold 1 after 3, and fold 0's batches
    # are absent from the steps of epoch 2.
    outcome = run_both_ways(
        tiny_config, tmp_path, monkeypatch, "dataset.generator.utterances_per_class_per_speaker=4",
        "cv.validation=0.5", "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
        "trainer.max_epochs=5", data_dir=tmp_path / "data",
    )
    assert [fold["epochs"] for fold in outcome["true"]["record"]["folds"]] == [2, 3]
    assert_each_fold_as_alone(outcome)
