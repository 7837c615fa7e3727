"""Feature files in the TIM-Net authors' shared format, and pickles that would run code."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np


def shared_arrays(per_class: int = 4, frames: int = 8, classes: int = 7, seed: int = 0) -> dict:
    """A dict in the shared format: rows ordered by class, x float32 (N, T, 39), y one-hot."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    x = rng.standard_normal((len(labels), frames, 39)).astype(np.float32)
    x += labels[:, None, None].astype(np.float32)  # learnable, though nothing depends on it
    return {"x": x, "y": np.eye(classes, dtype=np.float32)[labels]}


def save_shared(path: Path, arrays: dict) -> Path:
    """As the TIM-Net authors did: np.save of a dict (a pickle inside a .npy file)."""
    np.save(path, arrays, allow_pickle=True)
    return path


def overflow_in_float32(arrays: dict) -> None:
    """A finite float64 that the cast to the network's float32 turns into inf."""
    x = arrays["x"].astype(np.float64)
    x[0, 0, 0] = 1e48
    arrays["x"] = x


class RunsShell:
    """A pickle payload that would create `marker` if unpickled naively."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsExec:
    """A pickle payload that would create `marker` through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))
