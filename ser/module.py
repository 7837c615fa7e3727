"""The LightningModule that trains and evaluates one network on one fold."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ser.metrics import classification_metrics, confusion_matrix_metric

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
        self.test_metrics = classification_metrics(num_classes).clone(prefix="test/")
        self.test_confusion = confusion_matrix_metric(num_classes)
        self.metadata = dict(metadata or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.train_loss(logits, y)
        self.train_metrics.update(logits.detach().argmax(dim=1), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute(), prog_bar=True)
        self.train_metrics.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", self.eval_loss(logits, y), on_epoch=True, batch_size=len(y))
        self.val_metrics.update(logits.argmax(dim=1), y)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("test/loss", self.eval_loss(logits, y), on_epoch=True, batch_size=len(y))
        predictions = logits.argmax(dim=1)
        self.test_metrics.update(predictions, y)
        self.test_confusion.update(predictions, y)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def test_confusion_matrix(self) -> torch.Tensor:
        """The accumulated test confusion matrix (rows true, columns predicted)."""
        return self.test_confusion.compute().cpu()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Class names and feature settings travel with the weights, so a checkpoint can
        # be used on a new file without its DataModule.
        checkpoint["ser_metadata"] = {"class_names": self.class_names, **self.metadata}
