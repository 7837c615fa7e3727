"""UAR and WAR, defined once and computed the same way everywhere.

UAR (unweighted average recall) is the macro-averaged recall of scikit-learn's
`recall_score(average="macro")` and `classification_report`, which the reference code
used: the mean, over every class that occurs in the targets or in the predictions, of
that class's recall (correct / true count). A class that is only predicted, never true,
has recall 0 and counts; a class neither true nor predicted is left out. WAR is the
accuracy. Every figure the framework reports (training, validation and test metrics,
cross-corpus runs, anything recomputed from a stored confusion matrix) goes through
`recall_metrics` below. (torchmetrics' macro recall agrees in its current releases, but
the exclusion rule has changed across versions, so it is not relied on.)
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.functional.classification import multiclass_confusion_matrix
from torchmetrics.utilities import dim_zero_cat


def confusion_matrix_metric(num_classes: int, **metric_kwargs: Any) -> MulticlassConfusionMatrix:
    """A torchmetrics confusion matrix (rows true, columns predicted); summed over ranks on compute."""
    return MulticlassConfusionMatrix(num_classes=num_classes, **metric_kwargs)


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The confusion matrix (rows true, columns predicted) of 1-D predictions and targets."""
    return multiclass_confusion_matrix(
        predictions.reshape(-1), targets.reshape(-1), num_classes=num_classes
    )


def recall_metrics(confusion: torch.Tensor | list) -> dict[str, torch.Tensor]:
    """{"uar", "war"} (float64 scalars) from a confusion matrix (rows true, columns predicted).

    UAR averages the recall of the classes that are true or predicted at least once
    (scikit-learn's macro recall); WAR is the accuracy. NaN for an empty matrix.
    """
    matrix = torch.as_tensor(confusion, dtype=torch.float64)
    support, predicted = matrix.sum(dim=1), matrix.sum(dim=0)
    counted = (support > 0) | (predicted > 0)
    recall = matrix.diagonal()[counted] / support[counted].clamp(min=1)
    return {"uar": recall.mean(), "war": matrix.diagonal().sum() / matrix.sum()}


class UtterancePredictions(Metric):
    """Each evaluated utterance's prediction, target and loss, keyed by its manifest row.

    Under DDP, Lightning's distributed sampler evens out the ranks by repeating a few
    utterances of the test fold or validation split. `fold()` gathers every rank's
    predictions (one collective per state, in a fixed order, on every rank) and keeps one
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

    def fold(self) -> dict[str, torch.Tensor]:
        """`rows` (ascending, distinct), and the `predictions`, `targets`, `losses` of each, 1-D.

        Use this rather than `compute()`: torchmetrics squeezes every one-element result
        of `compute()` to 0-d, so a fold of a single utterance would lose its dimension.
        """
        return {name: values.reshape(-1) for name, values in self.compute().items()}

    def compute(self) -> dict[str, torch.Tensor]:
        """As `fold()`, except that torchmetrics squeezes one-element results to 0-d."""
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
