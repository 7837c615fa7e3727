"""Resuming an interrupted run: atomic checkpoints, the resume decision, epoch seeding.

A run started again in the same output directory skips the folds whose
`folds/fold_KK.json` matches its config hash (ser.training.engine) and continues the
interrupted fold from `checkpoints/fold_KK/last.ckpt` (written every epoch) when that
checkpoint has the same config hash. `AtomicCheckpointIO` writes checkpoints by a rename
in their own folder, so a kill never leaves a torn file (Lightning's own writer stages
them in the system temp folder). `EpochSeeding` and the DataModule's
`EpochSeededSampler` draw each batch's and epoch's randomness from (fold seed, epoch,
batch), so a resumed epoch repeats the draws of an uninterrupted one. `resumable_checkpoint`
accepts only a checkpoint that loads safely (ser.training.checkpoint) with a matching hash.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ser.data.sampling import derived_seed
from ser.models.reference.masks import seed_generator
from ser.tracking.atomic import atomic_torch_save
from ser.training.checkpoint import CheckpointError, load_dict, saved_config_hash
from ser.training.checkpoint import checkpoint_epoch as saved_epoch

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
# Separates the dropout stream from the sampler's stream (0) of the same seed.
DROPOUT_STREAM = 1
# The callback-state entry that marks a checkpoint written by a stacked run
# (ser.training.stacked.records): its layout has no Lightning loop state.
STACKED_STATE_KEY = "ser.training.stacked"


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that never leaves a partial checkpoint behind.

    Local paths: serialise into a temporary file next to the target, fsync, then
    `os.replace` (atomic on POSIX and Windows). Remote URLs keep Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_save_checkpoint(checkpoint, Path(path))

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's reads of a checkpoint (resume, `ckpt_path=`): ser.training.checkpoint's safe load.

        Never a full unpickle, whatever `weights_only` Lightning passes.
        """
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_dict(Path(path), map_location=map_location or "cpu")


def atomic_save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """`torch.save` to `path` through a temporary file in the same folder and a rename."""
    atomic_torch_save(checkpoint, path)


class EpochSeeding(pl.Callback):
    """Reseed the global generators before each training batch from (seed, epoch, batch, rank).

    Dropout masks then depend on where training is, not on what ran before in this
    process: a resumed epoch draws the same masks. (Per batch rather than per epoch,
    because creating a DataLoader iterator also draws from the global generator, and
    Lightning does not create it at the same point in a resumed fit.) Under DDP each
    rank draws its own masks, as separate devices would; rank zero, and a run on one
    device, draw those of (seed, epoch, batch) alone.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed = batch_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        seed_generator(seed, getattr(pl_module, "device", None))
        random.seed(seed)
        np.random.seed(seed % 2**32)


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The dropout seed of training batch `batch` of epoch `epoch` of a fold seeded `seed`.

    What `EpochSeeding` sets before the batch, and what a stacked run (cv.stack) hands the
    fold's network for it. Ranks beyond zero get their own: identical masks on every rank
    would correlate their noise.
    """
    keys = [epoch, batch, DROPOUT_STREAM, *([rank] if rank else [])]
    return derived_seed(seed, *keys)


def written_stacked(checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint was written by a stacked run (cv.stack)."""
    callbacks = checkpoint.get("callbacks")
    return isinstance(callbacks, dict) and STACKED_STATE_KEY in callbacks


def resumable_checkpoint(
    checkpoint_dir: Path, config_hash: str, data_hash: str | None = None, stacked: bool = False
) -> Path | None:
    """`checkpoint_dir/last.ckpt` if it exists, loads safely and was saved by this config
    (and, given `data_hash`, on this data), by a run of the same kind (`stacked`: folds
    trained together, whose checkpoints hold no Lightning loop state; `cv.stack=auto` may
    decide differently on another device).

    The file is read by ser.training.checkpoint (nothing in it can run code) and its config hash
    is checked before anything else in it is used. Anything else (unreadable, holding
    objects that are not plain data, another configuration) is not resumed: the fold
    starts afresh, and a warning names the file and the reason.
    """
    path = Path(checkpoint_dir) / LAST_CHECKPOINT
    if not path.is_file():
        return None
    try:
        checkpoint = load_dict(path)
        saved = saved_config_hash(checkpoint)
    except CheckpointError as error:  # a damaged or untrusted file is never used
        log.warning(
            "not resuming from %s: the file is refused (%s); the fold starts afresh", path, error.reason
        )
        return None
    if saved != config_hash:
        log.warning(
            "not resuming from %s: saved by config %s, this run is %s; the fold starts afresh",
            path, saved, config_hash,
        )
        return None
    saved_data = saved_config_hash(checkpoint, "data_hash")
    if data_hash is not None and saved_data != data_hash:
        log.warning(
            "not resuming from %s: saved on other data (data hash %s, this run's %s); the fold starts afresh",
            path, saved_data, data_hash,
        )
        return None
    if written_stacked(checkpoint) != stacked:
        kinds = ("one fold after another", "folds stacked (cv.stack)")
        log.warning(
            "not resuming from %s: written by a run of %s, this run trains %s; the fold starts afresh",
            path, kinds[written_stacked(checkpoint)], kinds[stacked],
        )
        return None
    return path


def checkpoint_epoch(path: Path) -> int:
    """The (0-based) epoch a checkpoint was saved in (read safely, ser.training.checkpoint)."""
    return saved_epoch(path)
