"""UAR and WAR, named once and computed the same way everywhere."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassRecall,
)


def classification_metrics(num_classes: int) -> MetricCollection:
    """UAR (mean per-class recall over the classes present) and WAR (accuracy)."""
    return MetricCollection(
        {
            "uar": MulticlassRecall(num_classes=num_classes, average="macro"),
            "war": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        }
    )


def confusion_matrix_metric(num_classes: int) -> MulticlassConfusionMatrix:
    return MulticlassConfusionMatrix(num_classes=num_classes)


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
