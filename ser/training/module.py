"""The LightningModule that trains and evaluates one network on one fold."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch import nn
from torchmetrics import MeanMetric

from ser.errors import ConfigError, NonFiniteError
from ser.training.compile_cache import use_private_compile_cache
from ser.training.metrics import (
    UtterancePredictions,
    confusion_matrix,
    confusion_matrix_metric,
    recall_metrics,
)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

# Every value this module logs is already reduced over the ranks (see EmotionClassifier),
# so Lightning's advice to log epoch values with sync_dist=True does not apply; following
# it would reintroduce the lazy reductions that deadlock DDP.
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self\.log\(", category=PossibleUserWarning
)


# torch.compile modes `model.compile` may name (null: eager). reduce-overhead records CUDA
# graphs: on a GPU, where these small networks are bound by kernel launches, the training
# step of the reference MS-SENet ran 2.5x as fast (docs/bench/README.md).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: str | None) -> str | None:
    """`model.compile`: null or one of COMPILE_MODES (a ValueError names the setting)."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(f"model.compile={mode}: expected null or one of {', '.join(COMPILE_MODES)}")
    return mode


def check_finite(loss: torch.Tensor, what: str, epoch: int) -> None:
    """Stop a run whose loss is not finite: its predictions, and any figure from them, mean
    nothing. Once per epoch, on a value already reduced (no extra synchronisation)."""
    if not bool(torch.isfinite(loss)):
        raise NonFiniteError(
            f"the {what} loss is {float(loss)} at epoch {epoch}; the features or the weights are not finite: "
            f"check the data (python -m ser.data) or lower model.optimizer.lr"
        )


def _prefixed(values: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}": value for name, value in values.items()}


class EmotionClassifier(pl.LightningModule):
    """Cross-entropy training with label smoothing on training batches only (never on the
    stored labels, so it cannot reach a test fold: docs/reference.md, defect (b)).

    Under DDP every cross-rank reduction happens explicitly in the epoch-end hooks, which
    all ranks run in the same order, and values are logged already reduced
    (`sync_dist=False`): a lazy reduction in rank-zero-only code (the progress bar)
    would deadlock. Validation and test figures come from one prediction per utterance,
    UAR and WAR from a confusion matrix (ser.training.metrics). `compile` compiles the
    network for training steps only; evaluation runs it eagerly, and checkpoints hold
    the same state dict either way.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        class_names: list[str],
        label_smoothing: float = 0.1,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        metadata: dict[str, Any] | None = None,
        compile: str | None = None,  # noqa: A002 (the setting's name, model.compile)
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.compile_mode = check_compile_mode(compile)
        # In a plain dict, not an attribute: an nn.Module attribute would become a child
        # and put the network's weights in the state dict twice.
        self._compiled: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.train_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_loss = nn.CrossEntropyLoss()
        # Training figures cover every batch every rank trained on (the sampler's few
        # repeats included: they were trained on); summed over ranks on compute.
        self.train_mean_loss = MeanMetric()
        self.train_confusion = confusion_matrix_metric(self.num_classes)
        self.val_predictions = UtterancePredictions()
        self.test_predictions = UtterancePredictions()
        self._test_confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self._test_rows = torch.zeros(0, dtype=torch.long)
        self._unkeyed_rows = 0
        self.metadata = dict(metadata or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a training batch: compiled at its first call if `compile` is set."""
        if self.compile_mode is None:
            return self.net(x)
        if "net" not in self._compiled:
            use_private_compile_cache()  # not /tmp, where others could plant kernels
            self._compiled["net"] = torch.compile(self.net, mode=self.compile_mode)
        # One graph for every batch size (the full batches and the epoch's last, smaller
        # one), compiled once, instead of a second compilation at the second size.
        # (torch._dynamo's function, which torch's guide to dynamic shapes names: there is
        # no torch.compiler one.)
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return self._compiled["net"](x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.training_loss(self.training_forward(x), y)

    def training_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of a training batch's logits, counted in the epoch's training figures."""
        loss = self.train_loss(logits, y)
        self.train_mean_loss.update(loss.detach(), weight=len(y))
        self.train_confusion.update(logits.detach().argmax(dim=1), y)
        return loss

    def training_values(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """The epoch's training loss, UAR and WAR; the counts start again. `epoch`: the
        fold's epoch where its Trainer is not its own (stacked folds), else the Trainer's."""
        # Two reductions over the ranks, in this order on every rank.
        loss = self.train_mean_loss.compute()
        check_finite(loss, "training", self.current_epoch if epoch is None else epoch)
        matrix = self.train_confusion.compute()
        values = {"train/loss": loss, **_prefixed(recall_metrics(matrix), "train/")}
        self.train_mean_loss.reset()
        self.train_confusion.reset()
        return values

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.training_values(), prog_bar=True, sync_dist=False)

    def _keyed(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, manifest rows); (x, y) batches are numbered in order (one device only)."""
        x, y = batch[0], batch[1]
        if len(batch) > 2:
            return x, y, batch[2]
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise ValueError(
                "evaluation batches must carry their manifest rows (x, y, rows) on several "
                "devices, or the repeats of the distributed sampler would be counted"
            )
        start = self._unkeyed_rows
        self._unkeyed_rows += len(y)
        return x, y, torch.arange(start, start + len(y), device=y.device)

    def _evaluate(self, batch: tuple[torch.Tensor, ...], predictions: UtterancePredictions) -> None:
        x, y, rows = self._keyed(batch)
        logits = self(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")  # hard labels, as eval_loss
        predictions.update(rows, logits.argmax(dim=1), y, losses)

    def _fold_metrics(
        self, predictions: UtterancePredictions, prefix: str, epoch: int | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Loss, UAR and WAR of one prediction per utterance; the confusion matrix; the rows."""
        fold = predictions.fold()  # the one reduction over the ranks (a gather)
        matrix = confusion_matrix(fold["predictions"], fold["targets"], self.num_classes)
        loss = fold["losses"].mean()
        check_finite(loss, "validation" if prefix == "val/" else "test", self.current_epoch if epoch is None else epoch)
        values = {f"{prefix}loss": loss, **_prefixed(recall_metrics(matrix), prefix)}
        return values, matrix, fold["rows"]

    def on_validation_epoch_start(self) -> None:
        self.val_predictions.reset()
        self._unkeyed_rows = 0

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Batches are (x, y, manifest rows); (x, y) is accepted on a single device."""
        self._evaluate(batch, self.val_predictions)

    def validation_values(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """The validation split's loss, UAR and WAR, each utterance once; the counts start
        again. `epoch` as for `training_values`."""
        values, _, _ = self._fold_metrics(self.val_predictions, "val/", epoch)
        self.val_predictions.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.validation_values(), prog_bar=True, sync_dist=False)

    def on_test_epoch_start(self) -> None:
        self.test_predictions.reset()
        self._unkeyed_rows = 0

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Batches are (x, y, manifest rows); (x, y) is accepted on a single device."""
        self._evaluate(batch, self.test_predictions)

    def on_test_epoch_end(self) -> None:
        # Every rank gets the whole fold, one prediction per utterance, so every rank
        # computes and logs the same numbers. The matrix and rows are kept, so that reading
        # them later (on every rank or on rank zero alone) needs no further reduction.
        values, self._test_confusion, self._test_rows = self._fold_metrics(self.test_predictions, "test/")
        self.log_dict(values, sync_dist=False)

    def test_confusion_matrix(self) -> torch.Tensor:
        """The last test's confusion matrix (rows true, columns predicted), each utterance once."""
        return self._test_confusion.cpu()

    def test_rows(self) -> torch.Tensor:
        """The manifest rows the last test evaluated, ascending, each once."""
        return self._test_rows.cpu()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Class names and feature settings travel with the weights, so a checkpoint can
        # be used on a new file without its DataModule.
        checkpoint["ser_metadata"] = {"class_names": self.class_names, **self.metadata}
