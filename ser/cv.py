"""Fold assignment: the one place that decides which utterances test in which fold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import KFold

Fold = tuple[np.ndarray, np.ndarray]


def kfold_splits(num_utterances: int, folds: int, seed: int) -> list[Fold]:
    """The papers' protocol: `KFold(folds, shuffle=True, random_state=seed)` over rows.

    Rows must be in the reference order (class, then natural file name) for the splits
    to equal the published ones.
    """
    if folds < 2:
        raise ValueError(f"cv.folds must be at least 2, got {folds}")
    if folds > num_utterances:
        raise ValueError(
            f"cv.folds={folds} is more than the {num_utterances} utterances available"
        )
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = np.arange(num_utterances)
    return [(train, test) for train, test in splitter.split(rows)]


def make_folds(
    strategy: str,
    num_utterances: int,
    folds: int,
    seed: int,
    speakers: Sequence[str] | None = None,
) -> list[Fold]:
    """Folds for `cv.strategy`; `kfold` is the papers' utterance-level protocol."""
    if strategy == "kfold":
        return kfold_splits(num_utterances, folds, seed)
    raise ValueError(f"cv.strategy must be one of ['kfold'], got {strategy!r}")
