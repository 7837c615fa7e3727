"""Comparing a stacked fold's weights with another run's (tests of cv.stack)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

LEARNING_RATE = 1e-3  # the configs' Adam


def assert_weights_agree(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Two checkpoints of one fold trained with the folds' networks computed in another
    order (stacked, or grouped with other folds): the same steps, parameters and
    statistics within what floating-point order can move them.

    Adam scales each step to about its learning rate (1e-3) whatever the gradient's size,
    so a parameter whose gradient is zero but for rounding (a convolution's bias before
    BatchNorm) moves by up to a step each time, in a direction set by the order of
    additions: parameters agree to the steps taken, BatchNorm statistics (which the
    outputs depend on) closely.
    """
    assert ours["epoch"] == theirs["epoch"] and ours["global_step"] == theirs["global_step"]
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    steps = ours["global_step"]
    # Two runs whose rounding pushes such a parameter opposite ways part by up to two steps
    # of the learning rate each step; a BatchNorm's running mean follows the bias before it
    # with the norm's momentum (0.01).
    drift = 2 * LEARNING_RATE * steps
    for key, value in theirs["state_dict"].items():
        close = {"rtol": 1e-3, "atol": max(1e-4, 0.01 * drift)} if "running_" in key else {"rtol": 0.0, "atol": drift}
        torch.testing.assert_close(ours["state_dict"][key], value, **close)


# A stacked fold computes its network in another floating-point order than alone: figures
# agree to float32 rounding, which training compounds over epochs. A loss drifts most (measured:
# a test loss 1.8e-5 apart, relatively, after 3 epochs on an AVX-512 CPU); UAR and WAR come from
# the same predictions.
LOSS_TOLERANCE, FIGURE_TOLERANCE = 1e-4, 1e-5


def same_figure(key: str, ours: Any, theirs: Any) -> bool:
    """Whether a recorded figure `key` agrees between a stacked fold and the fold alone:
    floats within float32 rounding (losses looser), anything else exactly."""
    if isinstance(theirs, float):
        tolerance = LOSS_TOLERANCE if "loss" in key else FIGURE_TOLERANCE
        return ours == pytest.approx(theirs, rel=tolerance)
    return ours == theirs
