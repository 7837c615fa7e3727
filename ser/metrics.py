"""UAR and WAR, named once and computed the same way everywhere."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassRecall,
)
from torchmetrics.utilities import dim_zero_cat


def classification_metrics(num_classes: int, **metric_kwargs: Any) -> MetricCollection:
    """UAR (mean per-class recall over the classes present) and WAR (accuracy).

    `metric_kwargs` go to each torchmetrics metric (e.g. `sync_on_compute=False`).
    """
    return MetricCollection(
        {
            "uar": MulticlassRecall(num_classes=num_classes, average="macro", **metric_kwargs),
            "war": MulticlassAccuracy(num_classes=num_classes, average="micro", **metric_kwargs),
        }
    )


def confusion_matrix_metric(num_classes: int, **metric_kwargs: Any) -> MulticlassConfusionMatrix:
    return MulticlassConfusionMatrix(num_classes=num_classes, **metric_kwargs)


def unweighted_average_recall(confusion: torch.Tensor | list) -> float:
    """UAR from a confusion matrix (rows true, columns predicted), classes with support only."""
    matrix = torch.as_tensor(confusion, dtype=torch.float64)
    support = matrix.sum(dim=1)
    present = support > 0
    return float((matrix.diagonal()[present] / support[present]).mean())


def weighted_average_recall(confusion: torch.Tensor | list) -> float:
    """WAR (accuracy) from a confusion matrix."""
    matrix = torch.as_tensor(confusion, dtype=torch.float64)
    return float(matrix.diagonal().sum() / matrix.sum())


class UtterancePredictions(Metric):
    """Each test utterance's prediction, target and loss, keyed by its manifest row.

    Under DDP, Lightning's distributed sampler evens out the ranks by repeating a few
    utterances of the fold. `compute()` gathers every rank's predictions and keeps one
    per row (the first of identical repeats), so metrics computed from it count each
    utterance exactly once, on any number of devices.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("rows", "predictions", "targets", "losses"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, rows: torch.Tensor, predictions: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor
    ) -> None:
        self.rows.append(rows.long())
        self.predictions.append(predictions.long())
        self.targets.append(targets.long())
        self.losses.append(losses.float())

    def compute(self) -> dict[str, torch.Tensor]:
        """`rows` (ascending, distinct), and the `predictions`, `targets`, `losses` of each."""
        if isinstance(self.rows, list) and not self.rows:
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            return {"rows": empty, "predictions": empty, "targets": empty, "losses": empty.float()}
        rows = dim_zero_cat(self.rows)
        order = torch.argsort(rows, stable=True)
        ordered = rows[order]
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[1:] = ordered[1:] != ordered[:-1]
        keep = order[first]
        return {
            "rows": rows[keep],
            "predictions": dim_zero_cat(self.predictions)[keep],
            "targets": dim_zero_cat(self.targets)[keep],
            "losses": dim_zero_cat(self.losses)[keep],
        }
