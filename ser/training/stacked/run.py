"""`run_stacked`: the unfinished units of a job trained together in one Trainer (`cv.stack`).

Each fold is set up exactly as alone (ser.training.fold.prepare_fold: seeded, its
validation split carved, its module built right after `seed_everything(seed + fold)`,
its history and W&B run opened, its `last.ckpt` found), then one Trainer fits them all
(ser.training.stacked.module.StackedFolds), each fold keeping its own records on the way
(ser.training.stacked.records). After the fit, each fold in turn is tested as alone
(ser.training.fold.finish_fold: `cv.select`, the test, the result, its W&B summary) by a
Trainer of its own, and handed to `record` at once, so an interrupted run loses no
finished fold.

Resume: a fold continues from its `last.ckpt` (weights, optimiser, early stopping and
best-epoch state); a fold that had stopped or trained every epoch is only tested. Folds
resumed at different epochs (a run killed between two folds' checkpoints) start one
Trainer at the earliest of them, and each fold sits out the epochs it has already
trained. `fit_seconds` of each fold is the time of the fit it shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader

from ser.data.datamodule import FoldDataModule
from ser.settings import Settings
from ser.tracking import wandb_runs
from ser.training.build import build_trainer
from ser.training.fold import finish_fold, prepare_fold
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


def evaluation_trainer(settings: Settings, track: FoldTrack) -> pl.Trainer:
    """The Trainer that tests a fold: its loggers, and the epoch and step its fit reached,
    so the test's figures are logged where a fold alone logs them."""
    trainer = stacked_trainer(settings, logger=track.loggers)
    # Lightning's counters of the fold's fit (a fresh Trainer starts them at zero).
    trainer.fit_loop.epoch_progress.current.completed = track.epochs
    trainer.fit_loop.epoch_loop._batches_that_stepped = track.steps
    return trainer


def run_stacked(
    settings: Settings,
    datamodule: FoldDataModule,
    units: Sequence[Unit],
    output_dir: Path,
    experiment: str,
    record: Callable[[dict[str, Any]], None],
) -> None:
    """Train `units` together, then test each and hand its result to `record`."""
    runs = []
    try:
        for unit in units:
            runs.append(prepare_fold(
                settings, datamodule, unit.index, unit.train_rows, unit.test_rows, output_dir, experiment,
                stacked=True,
            ))
        tracks = [FoldTrack(settings, run) for run in runs]
        for run in runs:
            if run.resume_from is not None:
                print(f"[ser] {experiment}: fold {run.fold} resumes from {run.resume_from}", flush=True)
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
