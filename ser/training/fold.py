"""One unit of an experiment: a fresh model trained on a fold's rows and tested on its test rows.

`run_fold` is all one fold does, whichever protocol it belongs to (a cross-validation
fold, a cross-corpus repeat): seed, fit (resuming from `last.ckpt`), choose the weights
(`cv.select`), test, and report the fold's result and its W&B run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from ser.data.datamodule import FoldDataModule
from ser.errors import NonFiniteError
from ser.tracking import embeddings, wandb_runs
from ser.tracking.history import EpochHistory, read_history
from ser.training import distributed, resume
from ser.training.build import build_callbacks, build_module, build_trainer
from ser.training.config import config_hash
from ser.training.selection import protocol_callbacks, select_checkpoint, split_validation


def fold_test_speakers(datamodule: Any, test_rows: Any) -> list[str]:
    """The speakers of a fold's test rows (disjoint from training under cv=speaker)."""
    manifest = datamodule.manifest
    if manifest is None:
        return []
    speakers = manifest.speakers
    return sorted({str(speakers[int(i)]) for i in test_rows})


def fold_history(cfg: DictConfig, output_dir: Path, fold: int, resumed_epoch: int | None) -> EpochHistory:
    """The fold's epoch record (ser.tracking.history), naming its W&B run: the run of the
    first attempt when the fold resumes, a new one when it starts afresh."""
    saved = read_history(output_dir, fold)["wandb_id"] if resumed_epoch is not None else None
    history = EpochHistory(output_dir, fold, resumed_epoch, saved or wandb_runs.new_run_id(cfg.get("logger")))
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


def run_fold(
    cfg: DictConfig,
    datamodule: FoldDataModule,
    fold: int,
    train_rows: Any,
    test_rows: Any,
    output_dir: Path,
    experiment: str,
    run_config: dict[str, Any],
) -> dict[str, Any]:
    """Train a fresh model on one fold and test the weights `cv.select` picks.

    By default the last epoch's weights; with `cv.validation` and
    `cv.select=best_val_uar`, the epoch best on the fold's validation split. An
    interrupted fold continues from its `last.ckpt` (ser.training.resume).
    """
    fold_seed = int(cfg.seed) + fold
    pl.seed_everything(fold_seed, workers=True, verbose=False)
    train_rows, validation_rows = split_validation(cfg, datamodule, train_rows)
    datamodule.set_fold(train_rows, test_rows, validation_rows, shuffle_seed=fold_seed)
    fold_dir = output_dir / "checkpoints" / f"fold_{fold:02d}"
    module = build_module(cfg, datamodule)
    resume_from = resume.resumable_checkpoint(fold_dir, config_hash(cfg), datamodule.data_identity())
    resumed = {} if resume_from is None else {"resumed_from_epoch": resume.checkpoint_epoch(resume_from)}
    history = fold_history(cfg, output_dir, fold, resumed.get("resumed_from_epoch"))
    loggers = wandb_runs.fold_loggers(
        cfg.get("logger"), experiment, fold, run_config, wandb_runs.run_tags(cfg), history.wandb_id
    )
    started = time.time()
    try:
        trainer = build_trainer(
            cfg,
            logger=[*loggers, history],  # the history always: the figures are drawn from it
            callbacks=protocol_callbacks(cfg, fold_seed, fold_dir) + build_callbacks(cfg, fold_dir),
            enable_progress_bar=bool(cfg.progress),
        )
        if resume_from is not None:
            print(f"[ser] {experiment}: fold {fold} resumes from {resume_from}", flush=True)
        with named_fold(fold):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        fit_seconds = time.time() - started  # the part that grows with the epochs
        history.stop()
        selected, selection = select_checkpoint(cfg, trainer, module, datamodule)
        with named_fold(fold):
            trainer.test(module, datamodule=datamodule, verbose=False, ckpt_path=selected, weights_only=True)
        if trainer.is_global_zero and OmegaConf.select(cfg, "plots.embeddings", default=False):
            embeddings.save_fold_embeddings(module, datamodule, fold, output_dir)
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
            "num_train": len(train_rows),
            "test_rows": [int(i) for i in test_rows],
            "training_seed": fold_seed,
            "epochs": int(trainer.current_epoch),
            "seconds": round(time.time() - started, 2),
            "fit_seconds": round(fit_seconds, 2),
        }
        result.update(selection, **resumed, test_speakers=fold_test_speakers(datamodule, test_rows))
        if trainer.is_global_zero:
            wandb_runs.log_fold_result(loggers, result, datamodule.class_names)
        return result
    finally:
        wandb_runs.finish_loggers(loggers)
