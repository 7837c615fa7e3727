"""`StackedFolds`: the LightningModule that trains several folds' modules in one Trainer.

Each step takes one batch per fold (its own rows and order: ser.training.stacked.run)
and computes the folds' networks as one program (ser.models.stacked.StackedNetworks),
each with its own weights, BatchNorm statistics and dropout seeds. Each fold's loss is its
module's own; their sum gets one backward pass (the folds share no parameter) and each
fold steps its own optimiser, so Adam's state is what the fold alone would have. Folds
whose batches differ in size (an epoch's last batch) run in sub-groups of equal size; a
fold with no batch left, stopped early or not yet at its resumed epoch takes no step.
Validation runs each fold's module on its own split; per-fold records are `FoldTrack`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ser.models.stacked import StackedNetworks
from ser.training.compile_cache import use_private_compile_cache
from ser.training.fold import named_fold
from ser.training.module import check_compile_mode
from ser.training.resume import batch_seed
from ser.training.stacked.records import FoldTrack

FoldBatch = tuple[torch.Tensor, torch.Tensor]


def equal_size_groups(batches: Sequence[FoldBatch | None], folds: Sequence[int]) -> list[list[int]]:
    """`folds` (positions into `batches`) grouped by batch size, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for fold in folds:
        groups.setdefault(len(batches[fold][1]), []).append(fold)  # type: ignore[index]
    return list(groups.values())


class StackedFolds(pl.LightningModule):
    """Several folds' `EmotionClassifier`s fitted together (see the module doc).

    `first_epoch`: the folds' epoch that is the Trainer's epoch 0 (a resumed run starts
    its Trainer at the earliest epoch one of its folds has yet to train). `compile`: a
    torch.compile mode for the training computation, as `model.compile`.
    """

    def __init__(self, tracks: Sequence[FoldTrack], first_epoch: int = 0, compile: str | None = None) -> None:  # noqa: A002
        super().__init__()
        self.tracks = list(tracks)
        # Registered, so that Lightning moves every fold's module (and its metrics) to the device.
        self.classifiers = nn.ModuleList(track.module for track in self.tracks)
        self.stacked = StackedNetworks([track.module.net for track in self.tracks])
        self.first_epoch = int(first_epoch)
        self.compile_mode = check_compile_mode(compile)
        self._compiled: dict[str, Callable[..., torch.Tensor]] = {}
        self.validated_tracks: list[int] = [
            i for i, track in enumerate(self.tracks) if track.run.validation_rows is not None
        ]
        # One optimiser per fold: each fold's parameters and Adam state are its own.
        self.automatic_optimization = False

    @property
    def fold_epoch(self) -> int:
        """The folds' epoch the Trainer is in."""
        return self.first_epoch + int(self.current_epoch)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [track.make_optimizer() for track in self.tracks]

    def _optimizers(self) -> list[Any]:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def on_fit_start(self) -> None:
        for track in self.tracks:
            if not track.done_training:
                track.start()

    # -- training ---------------------------------------------------------------------
    def training_forward(self, x: torch.Tensor, folds: list[int], seeds: list[int]) -> torch.Tensor:
        """The folds' networks on their batches x (folds, batch, frames, features)."""
        if self.compile_mode is None:
            return self.stacked(x, folds, seeds)
        if "stacked" not in self._compiled:
            use_private_compile_cache()  # not /tmp, where others could plant kernels
            self._compiled["stacked"] = self.stacked.compiled(self.compile_mode)
        return self._compiled["stacked"](x, folds, seeds)

    def training_step(self, batch: Sequence[FoldBatch | None], batch_idx: int) -> None:
        epoch = self.fold_epoch
        present = [i for i, track in enumerate(self.tracks) if batch[i] is not None and track.trains(epoch)]
        if not present:
            return None
        total: torch.Tensor | None = None
        for group in equal_size_groups(batch, present):
            x = torch.stack([batch[i][0] for i in group])  # type: ignore[index]
            seeds = [batch_seed(self.tracks[i].run.seed, epoch, batch_idx) for i in group]
            logits = self.training_forward(x, group, seeds)
            for position, i in enumerate(group):
                loss = self.tracks[i].module.training_loss(logits[position], batch[i][1])  # type: ignore[index]
                total = loss if total is None else total + loss
        optimizers = self._optimizers()
        for i in present:
            optimizers[i].zero_grad()
        assert total is not None
        self.manual_backward(total)
        for i in present:
            optimizers[i].step()
            self.tracks[i].steps += 1
        return None

    def on_train_epoch_end(self) -> None:
        epoch = self.fold_epoch
        optimizers = self._optimizers()
        for i, track in enumerate(self.tracks):
            if track.trains(epoch):
                with named_fold(track.run.fold):
                    track.end_epoch(
                        epoch, track.module.training_values(epoch), optimizers[i].optimizer, self.trainer
                    )
        if all(track.done_training for track in self.tracks):
            self.trainer.should_stop = True

    # -- validation -------------------------------------------------------------------
    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        track = self.tracks[self.validated_tracks[dataloader_idx]]
        if track.trains(self.fold_epoch) or self.trainer.sanity_checking:
            track.module.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        epoch = self.fold_epoch
        for i in self.validated_tracks:
            track = self.tracks[i]
            if self.trainer.sanity_checking or not track.trains(epoch):
                track.module.val_predictions.reset()  # a sanity check records nothing
                continue
            with named_fold(track.run.fold):
                track.validated(track.module.validation_values(epoch), epoch)
