"""The training order: a fresh shuffle per epoch that depends only on (seed, epoch).

`DataLoader(shuffle=True)` draws each epoch's order from the global torch generator,
whose state a checkpoint does not hold, so a run resumed from a checkpoint would see
different orders from the one that was not interrupted. Here epoch e's order is
`randperm` under a generator seeded from (seed, e) alone: a resumed epoch draws exactly
the order the uninterrupted run drew.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def derived_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for (seed, *keys), well mixed so neighbouring keys are unrelated."""
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *(int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s training order."""
    return derived_seed(seed, epoch, 0)


class EpochSeededSampler(Sampler[int]):
    """A random permutation of `num_rows` per epoch, seeded by (seed, epoch).

    Lightning calls `set_epoch(e)` before each training epoch (resumed runs included).
    Without it (a plain loop), each new iteration moves on to the next epoch.
    `first_epoch`: the epoch of the loader's first iteration, which Lightning counts as
    its epoch 0 (a stacked run, ser.training.stacked, that resumes its folds at epoch k
    starts a Trainer whose epoch 0 is the folds' epoch k).
    """

    def __init__(self, num_rows: int, seed: int, first_epoch: int = 0) -> None:
        self.num_rows = int(num_rows)
        self.seed = int(seed)
        self.first_epoch = int(first_epoch)
        self.epoch = self.first_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = self.first_epoch + int(epoch)

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_rows, generator=generator).tolist()
        self.epoch += 1
        return iter(order)
