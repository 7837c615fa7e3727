"""One definition of UAR (scikit-learn's macro recall) everywhere, and folds as small as
one test utterance."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, recall_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ser.training.metrics import (
    UtterancePredictions,
    recall_metrics,
)
from ser.training.module import EmotionClassifier
from tests.helpers.cli_runs import run_train_py
from tests.helpers.config import TINY_DATA

NUM_CLASSES = 4


def sklearn_uar(targets: list[int], predictions: list[int]) -> float:
    """The reference code's figure: classification_report's macro recall (= recall_score's)."""
    report = classification_report(targets, predictions, output_dict=True, zero_division=0)
    macro = recall_score(targets, predictions, average="macro", zero_division=0)
    assert report["macro avg"]["recall"] == pytest.approx(macro)
    return float(macro)


def matrix(targets: list[int], predictions: list[int]) -> np.ndarray:
    return confusion_matrix(targets, predictions, labels=list(range(NUM_CLASSES)))


def test_uar_counts_a_class_that_is_only_predicted() -> None:
    # Class 2 is predicted but never true, class 3 neither: (1 + 0.5 + 0) / 3.
    targets, predictions = [0, 0, 1, 1], [0, 0, 1, 2]
    assert sklearn_uar(targets, predictions) == 0.5
    assert float(recall_metrics(matrix(targets, predictions))["uar"]) == 0.5
    assert float(recall_metrics(matrix(targets, predictions))["war"]) == 0.75


def test_uar_and_war_equal_scikit_learn_on_folds_that_lack_classes() -> None:
    generator = np.random.default_rng(0)
    for _ in range(200):
        size = int(generator.integers(1, 12))
        present = generator.choice(NUM_CLASSES, size=int(generator.integers(1, NUM_CLASSES)), replace=False)
        targets = generator.choice(present, size=size).tolist()  # a class or more never true
        predictions = generator.integers(0, NUM_CLASSES, size=size).tolist()
        values = recall_metrics(matrix(targets, predictions))
        assert float(values["uar"]) == pytest.approx(sklearn_uar(targets, predictions), abs=1e-12)
        assert float(values["war"]) == pytest.approx(accuracy_score(targets, predictions), abs=1e-12)


class Replay(nn.Module):
    """Logits read from the input (x[:, 0, :]): predictions chosen by the test, whatever training does."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :] + 0.0 * self.unused


def loader(targets: list[int], predictions: list[int], with_rows: bool = True) -> DataLoader:
    x = nn.functional.one_hot(torch.tensor(predictions), NUM_CLASSES).float().unsqueeze(1)
    y = torch.tensor(targets)
    tensors = (x, y, torch.arange(len(y))) if with_rows else (x, y)
    return DataLoader(TensorDataset(*tensors), batch_size=3)


def replay_module() -> tuple[EmotionClassifier, pl.Trainer]:
    optimizer = functools.partial(torch.optim.SGD, lr=0.0)
    module = EmotionClassifier(Replay(), optimizer, [f"c{i}" for i in range(NUM_CLASSES)])
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    return module, trainer


@pytest.mark.parametrize(
    ("targets", "predictions"),
    [
        ([0, 0, 1, 1], [0, 0, 1, 2]),  # a class only predicted
        ([0, 0, 1, 1, 3], [0, 1, 1, 1, 0]),  # class 2 neither true nor predicted
        ([2], [2]),  # one utterance, right
        ([2], [1]),  # one utterance, wrong
    ],
)
def test_the_reported_train_validation_and_test_uar_is_scikit_learns(
    targets: list[int], predictions: list[int]
) -> None:
    expected = {"uar": sklearn_uar(targets, predictions), "war": accuracy_score(targets, predictions)}
    module, trainer = replay_module()
    trainer.fit(module, train_dataloaders=loader(targets, predictions, with_rows=False))
    train = {name: float(value) for name, value in trainer.callback_metrics.items()}
    validation = trainer.validate(module, dataloaders=loader(targets, predictions), verbose=False)[0]
    test = trainer.test(module, dataloaders=loader(targets, predictions), verbose=False)[0]
    for name, value in expected.items():
        assert train[f"train/{name}"] == pytest.approx(value), name
        assert validation[f"val/{name}"] == pytest.approx(value), name
        assert test[f"test/{name}"] == pytest.approx(value), name
    assert module.test_confusion_matrix().tolist() == matrix(targets, predictions).tolist()
    assert module.test_rows().tolist() == list(range(len(targets)))


def test_a_fold_of_one_utterance_keeps_its_dimension() -> None:
    """torchmetrics squeezes one-element results of compute() to 0-d; fold() does not."""
    metric = UtterancePredictions()
    metric.update(torch.tensor([5]), torch.tensor([1]), torch.tensor([2]), torch.tensor([0.25]))
    fold = metric.fold()
    assert {name: values.shape for name, values in fold.items()} == {
        "rows": (1,), "predictions": (1,), "targets": (1,), "losses": (1,),
    }
    assert fold["rows"].tolist() == [5] and fold["targets"].tolist() == [2]


@pytest.mark.slow
def test_a_protocol_whose_folds_each_hold_one_test_utterance_completes(
    tmp_path: Path, data_dir: Path
) -> None:
    """7 utterances, 7 folds, through `python train.py` with its defaults (progress bar, W&B offline)."""
    shrunk = [o for o in TINY_DATA if not o.startswith(("cv.folds=", "dataset.generator."))]
    run_dir = tmp_path / "run"
    run_train_py(
        [
            *shrunk, "dataset.generator.num_speakers=1",
            "dataset.generator.utterances_per_class_per_speaker=1", "cv.folds=7", f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "complete" and record["num_utterances"] == 7
    folds = record["folds"]
    assert [f["num_test"] for f in folds] == [1] * 7
    assert sorted(row for f in folds for (row,) in [f["test_rows"]]) == list(range(7))
    for fold in folds:
        confusion = np.asarray(fold["confusion_matrix"])
        (target,), (predicted,) = np.nonzero(confusion)
        assert fold["test/uar"] == pytest.approx(sklearn_uar([target], [predicted]))
        assert fold["test/war"] == float(target == predicted)
        assert np.isfinite(fold["test/loss"])
    summary = record["summary"]
    assert summary["test/uar_mean"] == pytest.approx(np.mean([f["test/uar"] for f in folds]))
    assert summary["num_test_utterances"] == 7
