"""`run_stacked`: the unfinished units of a job trained together in one Trainer (`cv.stack`).

Each fold is set up exactly as alone (ser.training.fold.prepare_fold), one Trainer fits
them all (ser.training.stacked.module), each fold keeping its own records
(ser.training.stacked.records); then each fold is tested as alone (finish_fold) by a
Trainer of its own and handed to `record` at once, so an interrupted run loses no
finished fold. A resumed fold continues from its `last.ckpt`, or is only tested if it
had finished; folds resumed at different epochs start one Trainer at the earliest, each
sitting out the epochs it has trained. Each fold's `fit_seconds` is the shared fit's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import CombinedLoader

from ser.data.datamodule import FoldDataModule
from ser.settings import Settings
from ser.tracking import wandb_runs
from ser.training.build import build_trainer
from ser.training.fold import ExperimentContext, finish_fold, prepare_fold
from ser.training.protocols.base import Unit
from ser.training.stacked.module import StackedFolds
from ser.training.stacked.records import FoldTrack


def stacked_trainer(settings: Settings, **arguments: Any) -> pl.Trainer:
    """A Trainer of the run's `trainer` settings that writes nothing of its own: each
    fold's records are its FoldTrack's (fit) or its evaluation's loggers (test)."""
    return build_trainer(
        settings.trainer, callbacks=[], enable_checkpointing=False,
        enable_progress_bar=settings.progress, **{"logger": False, **arguments},
    )


def fit_together(settings: Settings, datamodule: FoldDataModule, tracks: Sequence[FoldTrack]) -> None:
    """One Trainer fits the folds of `tracks` (none of them done training)."""
    first_epoch = min(track.next_epoch for track in tracks)
    training = CombinedLoader(
        [datamodule.training_loader(t.run.train_rows, t.run.seed, first_epoch) for t in tracks], "max_size"
    )
    validation = [
        datamodule.evaluation_loader(t.run.validation_rows) for t in tracks if t.run.validation_rows is not None
    ]
    module = StackedFolds(tracks, first_epoch, settings.model.compile)
    trainer = stacked_trainer(settings, max_epochs=settings.trainer.max_epochs - first_epoch)
    trainer.fit(module, train_dataloaders=training, val_dataloaders=validation)
    for track in tracks:
        for logger in track.loggers:  # what Lightning does with a fold's loggers when its fit ends
            logger.finalize("success")


class AtFoldStep(Logger):
    """One of a fold's loggers, for the Trainer that tests the fold after a stacked fit:
    what that Trainer logs lands at the step the fold's fit reached, where a fold alone
    logs its test. A fresh Trainer counts its logging step from zero, and Lightning has no
    public way to set that count; everything else goes to the fold's logger as it is."""

    def __init__(self, logger: Logger, step: int) -> None:
        super().__init__()
        self.logger, self.step = logger, step

    @property
    def name(self) -> str | None:
        return self.logger.name

    @property
    def version(self) -> int | str | None:
        return self.logger.version

    @property
    def save_dir(self) -> str | None:
        return self.logger.save_dir

    @property
    def experiment(self) -> Any:
        return self.logger.experiment

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.logger.log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logger.log_metrics(metrics, step=self.step)

    def save(self) -> None:
        self.logger.save()

    def finalize(self, status: str) -> None:
        self.logger.finalize(status)


def evaluation_trainer(settings: Settings, track: FoldTrack) -> pl.Trainer:
    """The Trainer that tests a fold: its loggers, and the epoch and step its fit reached,
    so the test's figures are logged where a fold alone logs them."""
    trainer = stacked_trainer(settings, logger=[AtFoldStep(logger, track.steps) for logger in track.loggers])
    # The epoch its fit reached (a fresh Trainer starts at zero), which Lightning adds to
    # the figures it logs and the module names in a non-finite loss's message: the fit
    # loop's public counter that Trainer.current_epoch reads (the property has no setter).
    trainer.fit_loop.epoch_progress.current.completed = track.epochs
    return trainer


def run_stacked(
    settings: Settings,
    datamodule: FoldDataModule,
    units: Sequence[Unit],
    experiment: ExperimentContext,
    record: Callable[[dict[str, Any]], None],
) -> None:
    """Train `units` together, then test each and hand its result to `record`."""
    runs = []
    try:
        for unit in units:
            runs.append(prepare_fold(settings, datamodule, unit, experiment, stacked=True))
        tracks = [FoldTrack(settings, run) for run in runs]
        for run in runs:
            if run.resume_from is not None:
                print(f"[ser] {experiment.name}: fold {run.fold} resumes from {run.resume_from}", flush=True)
        started = time.time()
        training = [track for track in tracks if not track.done_training]
        if training:
            fit_together(settings, datamodule, training)
        fit_seconds = time.time() - started  # the part that grows with the epochs, shared
        for track in tracks:
            track.run.history.stop()
        for track in tracks:
            track.run.select_rows(datamodule)
            record(finish_fold(
                settings, track.run, evaluation_trainer(settings, track), datamodule, track.best_path,
                track.epochs, started, fit_seconds,
            ))
            wandb_runs.finish_loggers(track.run.loggers)
            track.run.loggers.clear()
    finally:
        for run in runs:
            wandb_runs.finish_loggers(run.loggers)
