"""Comparing a stacked fold's weights with another run's (tests of cv.stack)."""

from __future__ import annotations

from typing import Any

import torch


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
    for key, value in theirs["state_dict"].items():
        close = {"rtol": 1e-3, "atol": 1e-4} if "running_" in key else {"rtol": 0.0, "atol": 1e-3 * steps}
        torch.testing.assert_close(ours["state_dict"][key], value, **close)
