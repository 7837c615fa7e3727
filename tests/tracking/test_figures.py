"""The run's figures: PNGs of the expected size, drawn from the numbers the run recorded."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from ser.tracking import figures
from ser.tracking.figures import (
    CONFUSION_FILE,
    CURVES_FILE,
    DPI,
    FIGURE_SIZES,
    FOLDS_FILE,
    row_recall,
    summed_confusion,
    write_run_figures,
)
from ser.tracking.history import EpochHistory, history_path, load_histories, read_history

CLASSES = ["angry", "happy", "sad"]


def fold_rows() -> list[dict]:
    return [
        {"fold": 0, "test/uar": 0.5, "test/war": 0.6, "confusion_matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 0]]},
        {"fold": 1, "test/uar": 0.75, "test/war": 0.7, "confusion_matrix": [[1, 0, 0], [0, 2, 0], [1, 0, 3]]},
    ]


def write_histories(output_dir: Path, validation: bool) -> None:
    for fold in (0, 1):
        history = EpochHistory(output_dir, fold)
        for epoch in range(4):
            metrics = {"epoch": epoch, "train/loss": 2.0 - 0.3 * epoch - 0.1 * fold, "train/uar": 0.2 * epoch}
            if validation:
                metrics |= {"val/loss": 2.1 - 0.2 * epoch, "val/uar": 0.15 * epoch}
            history.log_metrics(metrics, step=epoch)


def assert_png(path: Path, name: str) -> np.ndarray:
    """The PNG decodes to the figure's size in pixels and is not blank."""
    image = matplotlib.image.imread(path)
    width, height = FIGURE_SIZES[name]
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert image[..., :3].std() > 0.05  # drawn on, not a blank canvas
    return image


def test_summed_confusion_and_recall() -> None:
    matrix = summed_confusion(fold_rows())
    assert matrix.tolist() == [[3, 1, 0], [0, 3, 1], [1, 0, 3]]
    recall = row_recall(np.array([[3, 1], [0, 0]]))
    assert recall[0].tolist() == [0.75, 0.25]
    assert np.isnan(recall[1]).all()  # a class never tested has no recall, not 0


@pytest.mark.parametrize("validation", [False, True])
def test_the_three_figures_are_drawn_from_the_run_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validation: bool
) -> None:
    write_histories(tmp_path, validation)
    handed: dict[str, tuple] = {}
    for name in ("plot_confusion_matrix", "plot_folds", "plot_curves"):
        real = getattr(figures, name)
        monkeypatch.setattr(
            figures, name,
            lambda *args, real=real, name=name, **kwargs: handed.setdefault(name, (args, kwargs)) and real(*args, **kwargs),
        )
    written = write_run_figures(tmp_path, fold_rows(), CLASSES, "a run")
    assert set(written) == {"figures/confusion_matrix", "figures/folds", "figures/curves"}
    # The numbers each figure was handed are the run's.
    matrix, classes = handed["plot_confusion_matrix"][0][:2]
    assert np.asarray(matrix).tolist() == [[3, 1, 0], [0, 3, 1], [1, 0, 3]] and list(classes) == CLASSES
    indices, uar, war = handed["plot_folds"][0][:3]
    assert (list(indices), list(uar), list(war)) == ([0, 1], [0.5, 0.75], [0.6, 0.7])
    histories = handed["plot_curves"][0][0]
    assert histories == load_histories(tmp_path, [0, 1])
    assert [e["epoch"] for e in histories[1]] == [0, 1, 2, 3]
    assert histories[1][2]["train/loss"] == pytest.approx(2.0 - 0.6 - 0.1)
    assert ("val/uar" in histories[0][0]) == validation
    for key, name in (("figures/confusion_matrix", CONFUSION_FILE), ("figures/folds", FOLDS_FILE),
                      ("figures/curves", CURVES_FILE)):
        assert written[key] == tmp_path / name
        assert_png(written[key], name)


def test_the_folds_figure_draws_each_score_as_a_bar(tmp_path: Path) -> None:
    # Bars of 100 % reach the top of the axes; bars of 0 % leave it blank: the heights are the numbers.
    path = figures.plot_folds([0, 1, 2], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0], tmp_path / FOLDS_FILE, "t")
    image = assert_png(path, FOLDS_FILE)
    blue = (image[..., 2] > 0.6) & (image[..., 0] < 0.4)  # tab:blue UAR bars
    columns = np.flatnonzero(blue.sum(axis=0) > image.shape[0] // 3)
    assert len(columns) > 0
    groups = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert len(groups) == 2  # folds 0 and 2; fold 1's bar has no height


def test_no_history_no_curves(tmp_path: Path) -> None:
    written = write_run_figures(tmp_path, fold_rows(), CLASSES, "an old run")
    assert "figures/curves" not in written and not (tmp_path / CURVES_FILE).exists()


def test_the_history_keeps_epoch_figures_and_survives_a_resume(tmp_path: Path) -> None:
    history = EpochHistory(tmp_path, 3, wandb_id="abc")
    history.log_metrics({"epoch": 0, "train/loss": 1.5, "train/uar": 0.25}, step=4)
    history.log_metrics({"epoch": 0, "val/uar": 0.5}, step=4)
    history.log_metrics({"train/loss_step": 9.0}, step=5)  # no epoch: a step figure
    history.log_metrics({"epoch": 1, "train/loss": 1.2}, step=8)
    history.stop()  # what follows fit (the test, a validation for cv.select) is not an epoch
    history.log_metrics({"epoch": 2, "test/uar": 0.1, "val/uar": 0.9}, step=8)
    saved = read_history(tmp_path, 3)
    assert saved["wandb_id"] == "abc"
    assert saved["epochs"] == [
        {"epoch": 0, "train/loss": 1.5, "train/uar": 0.25, "val/uar": 0.5},
        {"epoch": 1, "train/loss": 1.2},
    ]
    assert not list(history_path(tmp_path, 3).parent.glob("*.tmp"))
    # Resumed from the checkpoint of epoch 0: epoch 1 is trained again and rewritten.
    resumed = EpochHistory(tmp_path, 3, resumed_epoch=0, wandb_id="abc")
    resumed.log_metrics({"epoch": 1, "train/loss": 1.1}, step=8)
    assert [e.get("train/loss") for e in read_history(tmp_path, 3)["epochs"]] == [1.5, 1.1]
    # Started afresh (no usable checkpoint): the old epochs go.
    afresh = EpochHistory(tmp_path, 3, resumed_epoch=None, wandb_id="new")
    afresh.log_metrics({"epoch": 0, "train/loss": 2.0}, step=1)
    assert read_history(tmp_path, 3) == {"fold": 3, "wandb_id": "new", "epochs": [{"epoch": 0, "train/loss": 2.0}]}


def test_a_damaged_history_is_ignored(tmp_path: Path) -> None:
    path = history_path(tmp_path, 0)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert read_history(tmp_path, 0)["epochs"] == []
