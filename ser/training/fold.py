"""One unit of an experiment: a fresh model trained on a fold's rows and tested on its test rows.

`run_fold` is all one fold does, whichever protocol it belongs to (a cross-validation
fold, a cross-corpus repeat): seed, fit (resuming from `last.ckpt`), choose the weights
(`cv.select`), test, and report the fold's result and its W&B run. Its two ends,
`prepare_fold` (everything before the fit) and `finish_fold` (everything after), are
also those of each fold of a stacked run (ser.training.stacked), which fits several
folds in one Trainer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from ser.data.datamodule import FoldDataModule
from ser.errors import NonFiniteError
from ser.settings import Settings
from ser.tracking import embeddings, wandb_runs
from ser.tracking.history import EpochHistory, read_history
from ser.training import distributed, resume
from ser.training.build import build_callbacks, build_module, build_trainer
from ser.training.module import EmotionClassifier
from ser.training.protocols.base import Unit
from ser.training.selection import (
    best_checkpoint,
    protocol_callbacks,
    select_checkpoint,
    split_validation,
)


def fold_test_speakers(datamodule: Any, test_rows: Any) -> list[str]:
    """The speakers of a fold's test rows (disjoint from training under cv=speaker)."""
    manifest = datamodule.manifest
    if manifest is None:
        return []
    speakers = manifest.speakers
    return sorted({str(speakers[int(i)]) for i in test_rows})


def fold_history(settings: Settings, output_dir: Path, fold: int, resumed_epoch: int | None) -> EpochHistory:
    """The fold's epoch record (ser.tracking.history), naming its W&B run: the run of the
    first attempt when the fold resumes, a new one when it starts afresh."""
    saved = read_history(output_dir, fold)["wandb_id"] if resumed_epoch is not None else None
    history = EpochHistory(output_dir, fold, resumed_epoch, saved or wandb_runs.new_run_id(settings.logger))
    if distributed.is_global_zero():
        history.write()  # the run's id is on disk before anything is logged to it
    return history


@contextlib.contextmanager
def named_fold(fold: int) -> Iterator[None]:
    """A loss that is not finite, said with its fold."""
    try:
        yield
    except NonFiniteError as error:
        raise NonFiniteError(f"fold {fold}: {error}") from error


@dataclass(frozen=True)
class ExperimentContext:
    """What every unit of an experiment shares: the run's output directory and the
    experiment's name."""

    output_dir: Path
    name: str


@dataclass
class FoldRun:
    """One unit set up to train: its seed, rows, fresh module, checkpoint folder, the
    checkpoint it resumes from (if any), its epoch history and its loggers."""

    fold: int
    seed: int
    train_rows: np.ndarray
    validation_rows: np.ndarray | None
    test_rows: Any
    output_dir: Path
    fold_dir: Path
    module: EmotionClassifier
    resume_from: Path | None
    resumed_epoch: int | None  # the epoch `resume_from` was saved in
    history: EpochHistory
    loggers: list[Any]

    @property
    def resumed(self) -> dict[str, int]:
        """`resumed_from_epoch` of the fold's result, for a fold that continues a checkpoint."""
        return {} if self.resumed_epoch is None else {"resumed_from_epoch": self.resumed_epoch}

    def select_rows(self, datamodule: FoldDataModule) -> None:
        """Make the DataModule serve this fold's rows."""
        datamodule.set_fold(self.train_rows, self.test_rows, self.validation_rows, shuffle_seed=self.seed)


def prepare_fold(
    settings: Settings, datamodule: FoldDataModule, unit: Unit, experiment: ExperimentContext,
    stacked: bool = False,
) -> FoldRun:
    """Seed the fold, carve its validation split, build its fresh module, find the
    checkpoint it resumes from and open its history and loggers.

    The module is built right after `seed_everything(seed + fold)`, so a fold's initial
    weights are the same whether it trains alone or stacked with others. `stacked`: the
    fold trains with others (cv.stack): its W&B run stays open beside theirs, and it
    resumes only a stacked run's checkpoint.
    """
    fold, test_rows, output_dir = unit.index, unit.test_rows, experiment.output_dir
    fold_seed = settings.seed + fold
    pl.seed_everything(fold_seed, workers=True, verbose=False)
    train_rows, validation_rows = split_validation(settings, datamodule, unit.train_rows)
    datamodule.set_fold(train_rows, test_rows, validation_rows, shuffle_seed=fold_seed)
    fold_dir = output_dir / "checkpoints" / f"fold_{fold:02d}"
    module = build_module(settings, datamodule)
    resume_from = resume.resumable_checkpoint(fold_dir, settings.config_hash, datamodule.data_identity(), stacked)
    resumed_epoch = None if resume_from is None else resume.checkpoint_epoch(resume_from)
    history = fold_history(settings, output_dir, fold, resumed_epoch)
    loggers = wandb_runs.fold_loggers(
        settings.logger, experiment.name, fold, settings.run_config, wandb_runs.run_tags(settings),
        history.wandb_id,
        concurrent=stacked,
    )
    return FoldRun(
        fold, fold_seed, train_rows, validation_rows, test_rows, output_dir, fold_dir, module, resume_from,
        resumed_epoch, history, loggers,
    )


def finish_fold(
    settings: Settings,
    run: FoldRun,
    trainer: pl.Trainer,
    datamodule: FoldDataModule,
    best: str | None,
    epochs: int,
    started: float,
    fit_seconds: float,
) -> dict[str, Any]:
    """Test the weights `cv.select` picks (`best`: the fold's best checkpoint, if kept;
    `epochs`: how many it trained) with `trainer`, and report the fold's result and its W&B run."""
    module, fold, test_rows = run.module, run.fold, run.test_rows
    selected, selection = select_checkpoint(settings.cv, trainer, module, datamodule, best, epochs)
    with named_fold(fold):
        trainer.test(module, datamodule=datamodule, verbose=False, ckpt_path=selected, weights_only=True)
    if trainer.is_global_zero and settings.plot_embeddings:
        embeddings.save_fold_embeddings(module, datamodule, fold, run.output_dir)
    confusion = module.test_confusion_matrix()
    evaluated = module.test_rows().tolist()
    if evaluated != sorted(int(i) for i in test_rows):  # each test utterance exactly once
        raise RuntimeError(
            f"fold {fold}: the test evaluated {len(evaluated)} distinct utterances, "
            f"not the fold's {len(test_rows)}"
        )
    metrics = trainer.callback_metrics
    result = {
        "fold": fold,
        "test/uar": float(metrics["test/uar"]),
        "test/war": float(metrics["test/war"]),
        "test/loss": float(metrics["test/loss"]),
        "confusion_matrix": confusion.tolist(),
        "num_test": int(confusion.sum()),
        "num_train": len(run.train_rows),
        "test_rows": [int(i) for i in test_rows],
        "training_seed": run.seed,
        "epochs": int(epochs),
        "seconds": round(time.time() - started, 2),
        "fit_seconds": round(fit_seconds, 2),
    }
    result.update(selection, **run.resumed, test_speakers=fold_test_speakers(datamodule, test_rows))
    if trainer.is_global_zero:
        wandb_runs.log_fold_result(run.loggers, result, datamodule.class_names)
    return result


def run_fold(
    settings: Settings, datamodule: FoldDataModule, unit: Unit, experiment: ExperimentContext
) -> dict[str, Any]:
    """Train a fresh model on one fold (`unit`) and test the weights `cv.select` picks.

    By default the last epoch's weights; with `cv.validation` and
    `cv.select=best_val_uar`, the epoch best on the fold's validation split. An
    interrupted fold continues from its `last.ckpt` (ser.training.resume).
    """
    run = prepare_fold(settings, datamodule, unit, experiment)
    started = time.time()
    try:
        trainer = build_trainer(
            settings.trainer,
            logger=[*run.loggers, run.history],  # the history always: the figures are drawn from it
            callbacks=protocol_callbacks(settings.cv, run.seed, run.fold_dir)
            + build_callbacks(settings.callbacks, run.fold_dir),
            enable_progress_bar=settings.progress,
        )
        if run.resume_from is not None:
            print(f"[ser] {experiment.name}: fold {run.fold} resumes from {run.resume_from}", flush=True)
        with named_fold(run.fold):
            trainer.fit(run.module, datamodule=datamodule, ckpt_path=run.resume_from, weights_only=True)
        fit_seconds = time.time() - started  # the part that grows with the epochs
        run.history.stop()
        return finish_fold(
            settings, run, trainer, datamodule, best_checkpoint(trainer), int(trainer.current_epoch),
            started, fit_seconds,
        )
    finally:
        wandb_runs.finish_loggers(run.loggers)
