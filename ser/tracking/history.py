"""Per-epoch metrics of every fold, always kept in the output directory (`history/`).

Each fold's Trainer also gets an `EpochHistory`, whatever its other loggers: it keeps the
epoch-level figures (`train/loss`, `val/uar` ...) in `OUTPUT_DIR/history/fold_KK.json`,
rewritten atomically at each log, so the curves figure (ser.tracking.figures) needs no
W&B; the file also names the fold's W&B run, which a resumed fold continues. A fold
resumed from epoch e keeps the epochs up to e and rewrites the later ones; since
Lightning saves an epoch's checkpoint just before logging its training figures, a run
killed between the two lacks that one training point after resuming.
"""

from __future__ import annotations

import logging
from argparse import Namespace
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from ser.tracking.atomic import atomic_write_json, remove_stale_temporaries
from ser.tracking.results import read_json

log = logging.getLogger(__name__)

HISTORY_DIR = "history"
# What an epoch record keeps: the module's epoch-level figures (ser.training.module).
KEPT_PREFIXES = ("train/", "val/")


def history_path(output_dir: Path, fold: int) -> Path:
    """`history/fold_KK.json` of an output directory."""
    return Path(output_dir) / HISTORY_DIR / f"fold_{fold:02d}.json"


def read_history(output_dir: Path, fold: int) -> dict[str, Any]:
    """A fold's saved history: {"fold", "wandb_id", "epochs": [{"epoch", metric: value}]}.

    An absent or unreadable file is an empty history (logged), never an error: the
    history draws figures, it decides no result.
    """
    path = history_path(output_dir, fold)
    empty: dict[str, Any] = {"fold": fold, "wandb_id": None, "epochs": []}
    if not path.exists():
        return empty
    try:
        saved = read_json(path)
        epochs = [dict(entry) for entry in saved["epochs"] if isinstance(entry.get("epoch"), int)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("ignoring %s (%s)", path, error)
        return empty
    return {"fold": fold, "wandb_id": saved.get("wandb_id"), "epochs": epochs}


class EpochHistory(Logger):
    """A Lightning logger keeping one fold's epoch metrics in `history/fold_KK.json`.

    `resumed_epoch`: the epoch of the checkpoint the fold continues from (its earlier
    epochs are kept), or None for a fold that starts afresh. `wandb_id`: the fold's W&B
    run, recorded for a later resume.
    """

    def __init__(
        self, output_dir: Path, fold: int, resumed_epoch: int | None = None, wandb_id: str | None = None
    ) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self.fold = fold
        self.wandb_id = wandb_id
        self.epochs: dict[int, dict[str, float]] = {}
        self.recording = True
        remove_stale_temporaries(self.path)  # a killed attempt's half-written history
        if resumed_epoch is not None:
            for entry in read_history(output_dir, fold)["epochs"]:
                if entry["epoch"] <= resumed_epoch:
                    self.epochs[entry["epoch"]] = {k: v for k, v in entry.items() if k != "epoch"}

    @property
    def name(self) -> str:
        return HISTORY_DIR

    @property
    def version(self) -> int:
        return self.fold

    @property
    def save_dir(self) -> str:
        return str(self.output_dir)

    @property
    def path(self) -> Path:
        return history_path(self.output_dir, self.fold)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing: the config is in results.json and config.yaml."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Keep the epoch's training and validation figures; rewrite the file."""
        epoch = metrics.get("epoch")
        kept = {key: float(value) for key, value in metrics.items() if key.startswith(KEPT_PREFIXES)}
        if not self.recording or epoch is None or not kept:  # after fit, step-level, test
            return
        self.epochs.setdefault(int(epoch), {}).update(kept)
        self.write()

    def stop(self) -> None:
        """Record nothing more: called when `fit` ends, so that the evaluations that follow
        (`cv.select`'s validation, the test) add no epoch."""
        self.recording = False

    @rank_zero_only
    def write(self) -> None:
        """Write the history as it is now, atomically."""
        epochs = [{"epoch": epoch, **self.epochs[epoch]} for epoch in sorted(self.epochs)]
        atomic_write_json({"fold": self.fold, "wandb_id": self.wandb_id, "epochs": epochs}, self.path)


def load_histories(output_dir: Path, folds: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """The epochs of each of `folds` that has a history (folds without one are left out)."""
    histories = {}
    for fold in folds:
        epochs = read_history(output_dir, fold)["epochs"]
        if epochs:
            histories[fold] = epochs
    return histories
