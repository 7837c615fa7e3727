"""One fold of a stacked run: what it has trained, and the records a fold alone keeps.

One Trainer fits every fold (ser.training.stacked.module), so its loggers and callbacks
see no fold's figures; each fold's `FoldTrack` keeps, from its own module's figures, what
the fold alone would: its loggers (history, W&B, CSV: hyperparameters, then each epoch's
figures at Lightning's epoch and step); `last.ckpt` after each epoch (with
`callbacks.checkpoint`), a Lightning checkpoint of the fold's module built here, as
Lightning writes only the fitted module's (all folds); `best.ckpt` with
`cv.select=best_val_uar`, by ModelCheckpoint's rule; and early stopping, the configured
EarlyStopping judging the fold's figures through its hooks (`FoldTrainerView`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from ser.settings import Settings
from ser.training.checkpoint import load_dict
from ser.training.fold import FoldRun
from ser.training.resume import LAST_CHECKPOINT, STACKED_STATE_KEY, atomic_save_checkpoint
from ser.training.selection import BEST_CHECKPOINT

# The callback-state entry of a stacked fold's checkpoint: what a resumed run needs beyond
# the module and the optimiser (whether the fold stopped early, its best epoch so far).
STATE_KEY = STACKED_STATE_KEY


class FoldTrainerView:
    """The stacked Trainer as one fold's callback sees it: the fold's own figures
    (`callback_metrics`), epoch and `should_stop`, everything else the Trainer's.

    Lightning's EarlyStopping reads the monitored figure from `trainer.callback_metrics`
    and signals through `trainer.should_stop`; in a stacked fit those would be all folds'
    together, so each fold's EarlyStopping runs its public hooks on this view, and the
    rule it applies (patience, min_delta, thresholds, check_finite, strict) stays Lightning's.
    """

    def __init__(
        self, trainer: pl.Trainer, metrics: dict[str, torch.Tensor], epoch: int, should_stop: bool
    ) -> None:
        self.trainer = trainer
        self.callback_metrics = metrics
        self.current_epoch = epoch
        self.should_stop = should_stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trainer, name)


class FoldTrack:
    """One fold's place in a stacked fit: its module, progress and per-fold records."""

    def __init__(self, settings: Settings, run: FoldRun) -> None:
        self.run = run
        self.module = run.module
        self.loggers = [*run.loggers, run.history]  # the history always, as a fold alone
        self.max_epochs = settings.trainer.max_epochs
        self.min_epochs = settings.trainer.min_epochs
        callbacks = settings.callbacks
        # `callbacks.checkpoint` writes a fold's last.ckpt alone; without it (callbacks=none) none is kept.
        self.keeps_last = callbacks.checkpoint is not None
        stopping = callbacks.early_stopping
        self.stopper = instantiate(stopping) if stopping is not None else None
        self.keeps_best = settings.cv.select == "best_val_uar"
        self.best_score: float | None = None
        self.best_path: str | None = None
        self.next_epoch = 0  # the first epoch it has yet to train
        self.steps = 0  # training batches so far (Lightning's global step of the fold)
        self.stopped = False
        self.stop_signalled = False  # early stopping asked to stop (before trainer.min_epochs)
        self.validation: dict[str, torch.Tensor] = {}  # the current epoch's validation figures
        self.optimizer_state: dict[str, Any] | None = None
        if run.resume_from is not None:
            self.restore(load_dict(run.resume_from))

    # -- progress ---------------------------------------------------------------------
    def trains(self, epoch: int) -> bool:
        """Whether the fold trains epoch `epoch` (not before its resumed point, nor after it stopped)."""
        return not self.stopped and self.next_epoch <= epoch < self.max_epochs

    @property
    def done_training(self) -> bool:
        return self.stopped or self.next_epoch >= self.max_epochs

    @property
    def epochs(self) -> int:
        """How many epochs the fold has trained."""
        return self.next_epoch

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The fold's optimiser, as its module configures it, with a resumed fold's state.

        Called once the module is on its device, so that the loaded state follows it.
        """
        optimizer = self.module.configure_optimizers()
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
            self.optimizer_state = None
        return optimizer

    # -- logging ----------------------------------------------------------------------
    def start(self) -> None:
        """What Lightning hands a fold's loggers when its fit starts."""
        for logger in self.loggers:
            logger.log_hyperparams(self.module.hparams_initial)
            logger.log_graph(self.module)
            logger.save()

    def log(self, values: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        """Epoch figures to every logger of the fold, as Lightning logs them."""
        metrics = {**{key: float(value) for key, value in values.items()}, "epoch": epoch}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()

    def validated(self, values: dict[str, torch.Tensor], epoch: int) -> None:
        """The validation figures of epoch `epoch`: logged and kept for the epoch's end."""
        self.validation = values
        # Lightning logs an epoch's validation and training figures at its last batch's step.
        self.log(values, epoch, self.steps - 1)

    def end_epoch(
        self, epoch: int, training: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
        trainer: pl.Trainer,
    ) -> None:
        """Epoch `epoch` trained (in the stacked `trainer`): log its training figures, keep
        the best checkpoint, ask early stopping, and write `last.ckpt`."""
        self.log(training, epoch, self.steps - 1)
        self.next_epoch = epoch + 1
        figures, validated = {**self.validation, **training}, bool(self.validation)
        self.validation = {}
        if self.keeps_best and self._improves(figures.get("val/uar")):
            self.best_path = str(self.run.fold_dir / f"{BEST_CHECKPOINT}.ckpt")
            self._save(Path(self.best_path), epoch, optimizer)
        if self.stopper is not None:
            self._ask_stopper(figures, epoch, validated, trainer)
        if self.keeps_last:
            self._save(self.run.fold_dir / LAST_CHECKPOINT, epoch, optimizer)

    def _improves(self, score: torch.Tensor | None) -> bool:
        """ModelCheckpoint's rule (mode max, top 1): the first score, then a strictly
        better one; a score that is not finite counts as -inf."""
        if score is None:
            return False
        value = float(score) if math.isfinite(float(score)) else -math.inf
        if self.best_score is not None and not value > self.best_score:
            return False
        self.best_score = value
        return True

    def _ask_stopper(
        self, figures: dict[str, torch.Tensor], epoch: int, validated: bool, trainer: pl.Trainer
    ) -> None:
        """The fold's EarlyStopping, through its own hooks, on the fold's figures of `epoch`
        (`validated`: whether the fold was validated in it)."""
        stopper = self.stopper
        assert stopper is not None
        view = FoldTrainerView(trainer, figures, epoch, self.stop_signalled)
        stopper.setup(view, self.module, "fit")  # type: ignore[arg-type]
        if validated:  # it judges there instead when validation is not once per epoch
            stopper.on_validation_end(view, self.module)  # type: ignore[arg-type]
        stopper.on_train_epoch_end(view, self.module)  # type: ignore[arg-type]
        # As trainer.should_stop alone: once signalled it holds, and Lightning ends the fit
        # only once trainer.min_epochs are done.
        self.stop_signalled = bool(view.should_stop)
        if self.stop_signalled and epoch + 1 >= self.min_epochs:
            self.stopped = True

    # -- checkpoints ------------------------------------------------------------------
    def _save(self, path: Path, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        atomic_save_checkpoint(self.checkpoint(epoch, optimizer), path)

    def checkpoint(self, epoch: int, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The fold's checkpoint after epoch `epoch`, in Lightning's layout."""
        callbacks: dict[str, Any] = {
            STATE_KEY: {"stopped": self.stopped, "best_score": self.best_score, "best_path": self.best_path},
        }
        if self.stopper is not None:
            callbacks[self.stopper.state_key] = self.stopper.state_dict()
        checkpoint: dict[str, Any] = {
            "epoch": epoch,
            "global_step": self.steps,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": self.module.state_dict(),
            "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [],
            "callbacks": callbacks,
            "hparams_name": "kwargs",
            "hyper_parameters": dict(self.module.hparams),
        }
        self.module.on_save_checkpoint(checkpoint)  # ser_metadata: class names, features, network
        return checkpoint

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint `checkpoint` wrote (read safely by the caller)."""
        self.module.load_state_dict(checkpoint["state_dict"])
        self.next_epoch = int(checkpoint["epoch"]) + 1
        self.steps = int(checkpoint["global_step"])
        self.optimizer_state = checkpoint["optimizer_states"][0]
        callbacks = checkpoint.get("callbacks") or {}
        state = callbacks.get(STATE_KEY) or {}
        self.stopped = bool(state.get("stopped", False))
        self.best_score = state.get("best_score")
        self.best_path = state.get("best_path")
        if self.stopper is not None and self.stopper.state_key in callbacks:
            self.stopper.load_state_dict(callbacks[self.stopper.state_key])
