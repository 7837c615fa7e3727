"""cv.validation: a stratified, seeded split of each training fold that never touches the
test fold, used only to select a checkpoint (cv.select) or to stop early."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ser.settings import ConfigError
from ser.tracking.results import read_json
from ser.training.checkpoint import load_dict
from ser.training.engine import train
from ser.training.folds import make_folds, validation_split

# 7 classes of unequal size, in the reference row order (class, then file name).
LABELS = np.repeat(np.arange(7), [127, 81, 46, 69, 71, 79, 62])


@pytest.mark.parametrize("strategy", ["kfold", "speaker"])
def test_validation_never_overlaps_the_test_fold_and_is_stratified(strategy: str) -> None:
    speakers = [f"{i % 10:02d}" for i in range(len(LABELS))]
    folds = make_folds(strategy, len(LABELS), 10 if strategy == "kfold" else None, 46, speakers=speakers)
    for train_rows, test_rows in folds:
        kept, validation = validation_split(train_rows, LABELS, 0.1, seed=46)
        assert not set(validation) & set(test_rows)
        assert not set(validation) & set(kept)
        assert sorted([*kept, *validation]) == sorted(train_rows)
        assert len(validation) == int(np.ceil(0.1 * len(train_rows)))
        # Stratified: each class is in the validation split in its training proportion.
        train_counts, validation_counts = Counter(LABELS[train_rows]), Counter(LABELS[validation])
        for label, count in train_counts.items():
            assert abs(validation_counts[label] - 0.1 * count) <= 1


def test_validation_split_repeats_for_a_seed_and_changes_with_it() -> None:
    rows = np.arange(0, len(LABELS), 2)
    first, again, other = (validation_split(rows, LABELS, 0.2, seed)[1] for seed in (1, 1, 2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_fraction_too_small_for_the_classes_names_the_setting() -> None:
    # (A fraction outside (0, 1) is the cv settings' range: tests/test_typed_settings.py.)
    with pytest.raises(ValueError, match="cv.validation=0.01"):
        validation_split(np.arange(70), np.repeat(np.arange(7), 10), 0.01, seed=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cv.select=best_val_uar"], "cv.select=best_val_uar chooses on validation"),
        (["callbacks=early_stopping"], "callbacks.early_stopping chooses on validation"),
        (["cv.select=best"], "cv.select must be one of"),
    ],
)
def test_choosing_without_a_validation_split_is_refused(tiny_config, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        train(tiny_config(*overrides))


def test_an_objective_without_a_validation_split_is_refused_before_training(tiny_config, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"objective=val/uar is not measured .*cv\.validation"):
        train(tiny_config("objective=val/uar", output_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # refused at start, not after every fold trained


@pytest.mark.slow
def test_best_validation_checkpoint_is_tested_and_recorded(tiny_config, tmp_path) -> None:
    # Speaker folds of the 2-speaker corpus: 14 training utterances, 2 per class, so half
    # of them is one per class.
    cfg = tiny_config(
        "cv=speaker", "cv.folds=null", "cv.validation=0.5", "cv.select=best_val_uar",
        "trainer.max_epochs=3",
    )
    train(cfg)
    record = read_json(tmp_path / "run" / "results.json")
    assert record["cv"]["validation"] == 0.5 and record["cv"]["select"] == "best_val_uar"
    for fold in record["folds"]:
        assert fold["select"] == "best_val_uar"
        assert fold["num_validation"] == 7 and fold["num_train"] == 7
        assert not set(fold["validation_rows"]) & set(fold["test_rows"])
        assert 0 <= fold["selected_epoch"] <= 2
        assert 0.0 <= fold["val/uar"] <= 1.0
        best = tmp_path / "run" / "checkpoints" / f"fold_{fold['fold']:02d}" / "best.ckpt"
        assert load_dict(best)["epoch"] == fold["selected_epoch"]


@pytest.mark.slow
def test_early_stopping_on_the_validation_split(tiny_config, tmp_path) -> None:
    cfg = tiny_config(
        "cv=speaker", "cv.folds=null", "cv.validation=0.5", "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1", "trainer.max_epochs=8",
    )
    train(cfg)
    record = read_json(tmp_path / "run" / "results.json")
    for fold in record["folds"]:
        assert fold["select"] == "last"
        assert 1 <= fold["epochs"] <= 8
        assert fold["selected_epoch"] == fold["epochs"] - 1
        assert not set(fold["validation_rows"]) & set(fold["test_rows"])


def test_the_datamodule_refuses_validation_rows_from_the_test_fold() -> None:
    from ser.data.datamodule import FoldDataModule

    datamodule = FoldDataModule("synthetic")
    with pytest.raises(ValueError, match="overlap the test fold"):
        datamodule.set_fold([0, 1, 2], [3, 4], validation_indices=[4])
