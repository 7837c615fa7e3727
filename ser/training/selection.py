"""A fold's validation split and the weights it tests (`cv.validation`, `cv.select`).

By default a fold tests its last epoch's weights and has no validation split (the
paper's protocol). `cv.validation` carves a stratified, seeded split from the training
fold, and `cv.select=best_val_uar` tests the epoch best on it; the test fold never
chooses anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from ser.errors import ConfigError
from ser.settings import Settings
from ser.settings.data import CVSettings
from ser.training import folds, resume
from ser.training.module import EmotionClassifier

BEST_CHECKPOINT = "best"


def check_selection(settings: Settings) -> None:
    """Refuse settings that would choose anything without a validation split."""
    cv, select = settings.cv, settings.cv.select
    if cv.strategy == "predefined":
        if cv.validation is not None:
            raise ConfigError(
                f"cv.validation={cv.validation}: cv=predefined takes its validation rows from the "
                f"manifest's split column (split=val); leave cv.validation null"
            )
        return  # whether there are val rows to choose on is known from the data (split_validation)
    if cv.validation is not None:
        return
    monitors = settings.callbacks.monitors()
    if select != "last" or monitors:
        what = f"cv.select={select}" if select != "last" else f"callbacks.{monitors[0][0]}"
        raise ConfigError(
            f"{what} chooses on validation metrics, but cv.validation is null; set "
            f"cv.validation=0.1 (a split of each training fold; the test fold never chooses)"
        )


def protocol_record(cv: CVSettings) -> dict[str, Any]:
    """The fold-protocol settings results.json reports next to the strategy."""
    return {"validation": cv.validation, "select": cv.select, "group_by": cv.group_by}


def split_validation(
    settings: Settings, datamodule: Any, train_rows: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """(training rows, validation rows or None): `cv.validation` of the fold, stratified."""
    cv = settings.cv
    fraction = cv.validation
    if cv.strategy == "predefined":
        validation = folds.predefined_validation([u.split for u in datamodule.manifest.utterances])
        if validation is None and (cv.select != "last" or settings.callbacks.monitors()):
            raise ConfigError(
                f"cv=predefined chooses on validation metrics here, but no row of "
                f"{datamodule.corpus.name} has split=val; add val rows or use cv.select=last"
            )
        return np.asarray(train_rows, dtype=np.int64), validation
    if fraction is None:
        return np.asarray(train_rows, dtype=np.int64), None
    labels = datamodule.targets.numpy()
    return folds.validation_split(train_rows, labels, fraction, cv.split_seed(datamodule.corpus.split_seed))


def protocol_callbacks(cv: CVSettings, fold_seed: int, fold_dir: Path) -> list[pl.Callback]:
    """Dropout reseeded per batch (exact resume) and, for cv.select=best_val_uar, the best checkpoint.

    They come before the configured callbacks, so that `last.ckpt`, saved after them at
    each epoch's end, holds their up-to-date state.
    """
    callbacks: list[pl.Callback] = [resume.EpochSeeding(fold_seed)]
    if cv.select == "best_val_uar":
        callbacks.append(ModelCheckpoint(
            dirpath=str(fold_dir), filename=BEST_CHECKPOINT, monitor="val/uar", mode="max", save_top_k=1,
            save_last=False, enable_version_counter=False, auto_insert_metric_name=False,
        ))
    return callbacks


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The best checkpoint `protocol_callbacks` saved in a fold's fit (None: none watches val/uar)."""
    best = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == "val/uar"]
    return (best[0].best_model_path or None) if best else None


def select_checkpoint(
    cv: CVSettings, trainer: pl.Trainer, module: EmotionClassifier, datamodule: Any,
    best: str | None, epochs: int,
) -> tuple[str | None, dict[str, Any]]:
    """The checkpoint to test (None: the last epoch's weights) and what chose it.

    `best`: the fold's best checkpoint on its validation split, if it kept one; `epochs`:
    how many epochs the fold trained. With a validation split the chosen weights are also
    scored on it (by `trainer`), and its size, rows and metrics go into the fold's result.
    The test fold plays no part.
    """
    select = cv.select
    selected: str | None = None
    if select == "best_val_uar":
        selected = best
        if selected is None:
            raise RuntimeError("cv.select=best_val_uar, but no best checkpoint was saved")
    record: dict[str, Any] = {"select": select}
    rows = datamodule.validation_indices
    if rows is None:
        return selected, record
    scores = trainer.validate(
        module, datamodule=datamodule, ckpt_path=selected, verbose=False, weights_only=True
    )[0]
    record.update({
        "selected_epoch": resume.checkpoint_epoch(Path(selected)) if selected else epochs - 1,
        "num_validation": len(rows),
        "validation_rows": [int(i) for i in rows],
        **{key: float(scores[key]) for key in ("val/uar", "val/war", "val/loss") if key in scores},
    })
    return selected, record
