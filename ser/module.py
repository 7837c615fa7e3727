"""The LightningModule that trains and evaluates one network on one fold."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ser.metrics import UtterancePredictions, classification_metrics, confusion_matrix_metric

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class EmotionClassifier(pl.LightningModule):
    """Cross-entropy training with label smoothing on training batches only.

    Smoothing is applied by the loss to each training batch, never to the stored
    labels, so it cannot compound across folds or reach a test fold (the reference
    code's defect (b) in shared/SPEC.md). Test loss and metrics use the hard labels.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        class_names: list[str],
        label_smoothing: float = 0.1,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names)
        num_classes = len(self.class_names)
        self.train_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_loss = nn.CrossEntropyLoss()
        self.train_metrics = classification_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = classification_metrics(num_classes).clone(prefix="val/")
        # Test metrics are computed once per fold from `test_predictions`, which already
        # holds every rank's predictions, one per utterance: they must not sum over ranks
        # again.
        self.test_predictions = UtterancePredictions()
        self.test_metrics = classification_metrics(num_classes, sync_on_compute=False).clone(prefix="test/")
        self.test_confusion = confusion_matrix_metric(num_classes, sync_on_compute=False)
        self._unkeyed_test_rows = 0
        self.metadata = dict(metadata or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.train_loss(logits, y)
        self.train_metrics.update(logits.detach().argmax(dim=1), y)
        # sync_dist: under DDP the epoch's loss is averaged over every rank's batches.
        self.log(
            "train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
            sync_dist=True,
        )
        return loss

    def on_train_epoch_end(self) -> None:
        # torchmetrics has already summed every rank's counts: each rank logs the same.
        self.log_dict(self.train_metrics.compute(), prog_bar=True, sync_dist=True, reduce_fx="max")
        self.train_metrics.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", self.eval_loss(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        self.val_metrics.update(logits.argmax(dim=1), y)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True, reduce_fx="max")
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        for metric in (self.test_predictions, self.test_metrics, self.test_confusion):
            metric.reset()
        self._unkeyed_test_rows = 0

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Batches are (x, y, manifest rows); (x, y) is accepted on a single device."""
        x, y = batch[0], batch[1]
        if len(batch) > 2:
            rows = batch[2]
        else:
            if torch.distributed.is_available() and torch.distributed.is_initialized() \
                    and torch.distributed.get_world_size() > 1:
                raise ValueError(
                    "test batches must carry their manifest rows (x, y, rows) on several "
                    "devices, or the repeats of the distributed sampler would be counted"
                )
            start = self._unkeyed_test_rows
            rows = torch.arange(start, start + len(y), device=y.device)
            self._unkeyed_test_rows += len(y)
        logits = self(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")  # hard labels, as eval_loss
        self.test_predictions.update(rows, logits.argmax(dim=1), y, losses)

    def on_test_epoch_end(self) -> None:
        # Every rank gets the whole fold, one prediction per utterance, so every rank
        # computes the same numbers; reduce_fx="max" syncs them without rounding.
        fold = self.test_predictions.compute()
        self.test_metrics.update(fold["predictions"], fold["targets"])
        self.test_confusion.update(fold["predictions"], fold["targets"])
        values = {"test/loss": fold["losses"].mean(), **self.test_metrics.compute()}
        self.log_dict(values, sync_dist=True, reduce_fx="max")

    def test_confusion_matrix(self) -> torch.Tensor:
        """The last test's confusion matrix (rows true, columns predicted), each utterance once."""
        return self.test_confusion.compute().cpu()

    def test_rows(self) -> torch.Tensor:
        """The manifest rows the last test evaluated, ascending, each once."""
        return self.test_predictions.compute()["rows"].cpu()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Class names and feature settings travel with the weights, so a checkpoint can
        # be used on a new file without its DataModule.
        checkpoint["ser_metadata"] = {"class_names": self.class_names, **self.metadata}
