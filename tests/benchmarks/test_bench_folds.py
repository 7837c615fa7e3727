"""`python -m benchmarks.bench folds=true`: the default demo's folds trained stacked against
one after another, in one run, with the figures of each fold compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_folds
from benchmarks.bench import main
from tests.helpers.config import TINY_DATA


@pytest.mark.slow
def test_the_fold_benchmark_times_both_ways_and_compares_their_folds(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "bench-folds.json"
    overrides = [setting for setting in TINY_DATA if not setting.startswith("trainer.max_epochs")]
    main(["folds=true", "epochs=2", f"overrides=[{','.join([*overrides, f'paths.data_dir={data_dir}'])}]", f"out={out}"])
    results = json.loads(out.read_text())
    sequential, stacked, workers = results["sequential"], results["stacked"], results["stacked_workers"]
    assert not sequential["stacked"] and stacked["stacked"] and workers["stacked"]
    for run in (sequential, stacked, workers):
        assert len(run["folds"]) == 2 and all(fold["epochs"] == 2 for fold in run["folds"])
        assert run["samples"] == 28 * 2  # each utterance trains in one of the two folds, twice
        assert run["train_samples_per_s"] == pytest.approx(run["samples"] / run["fit_seconds"])
    assert results["speedup"] == pytest.approx(stacked["train_samples_per_s"] / sequential["train_samples_per_s"])
    assert results["workers_speedup"] == pytest.approx(workers["train_samples_per_s"] / sequential["train_samples_per_s"])
    # The folds' networks as one program: the same figures up to floating-point order.
    for compared in (results, results["workers_comparison"]):
        assert compared["same_predictions"] is True and isinstance(compared["identical"], bool)
        assert compared["max_abs_test_loss_difference"] < 1e-4 and compared["max_abs_train_loss_difference"] < 1e-4
    assert "cv.stack" not in " ".join(results["config"]["overrides"])  # each way sets its own


def test_the_comparison_names_the_largest_differences() -> None:
    fold = {"fold": 0, "test/uar": 0.5, "test/war": 0.5, "test/loss": 1.0, "confusion_matrix": [[1]], "epochs": 1,
            "history": [{"epoch": 0, "train/loss": 2.0}]}
    other = {**fold, "test/loss": 1.25, "history": [{"epoch": 0, "train/loss": 2.5}]}
    assert bench_folds.compare({"folds": [fold]}, {"folds": [fold]})["identical"] is True
    compared = bench_folds.compare({"folds": [fold]}, {"folds": [other]})
    assert compared["identical"] is False and compared["same_predictions"] is True
    assert bench_folds.compare({"folds": [fold]}, {"folds": [{**other, "test/uar": 0.4}]})["same_predictions"] is False
    assert compared["max_abs_test_loss_difference"] == 0.25 and compared["max_abs_train_loss_difference"] == 0.5
