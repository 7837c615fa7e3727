"""Developers' speed benchmarks and the one-shot GPU check, beside the package and not part
of it (`pip install .` ships `ser` alone; nothing in `ser/` imports from here). Run from a
checkout's root: `python -m benchmarks.bench`, `python -m benchmarks.bench_features`
(compares with librosa, a dev tool), `python -m benchmarks.gpu_check` (`make gpu-check`)."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout these modules live in (the GPU check runs the GPU-marked tests of its tests/).
REPOSITORY = Path(__file__).resolve().parents[1]


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a child process (`python -m benchmarks.bench`, `python -m
    ser.training`): this one's, with this checkout first on PYTHONPATH, so the child imports
    the same benchmarks and ser whatever its working folder."""
    paths = [str(REPOSITORY), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}
