"""Audio files for tests: short noise clips, and a file that cannot be opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile


def write_wav(
    path: Path, seconds: float = 0.01, sample_rate: int = 16000, channels: int = 1, seed: int = 0
) -> Path:
    """A short clip of quiet noise (never silent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = max(1, int(round(seconds * sample_rate)))
    audio = (0.1 * rng.standard_normal((frames, channels))).astype(np.float32)
    soundfile.write(str(path), audio if channels > 1 else audio[:, 0], sample_rate, subtype="PCM_16")
    return path


def write_noise(path: Path, seconds: float = 0.8, sample_rate: int = 16000, seed: int = 0) -> Path:
    """Noise of `seconds` at `sample_rate` (float samples), written with soundfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    soundfile.write(str(path), (0.1 * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32), sample_rate)
    return path


def deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Opening `denied` raises PermissionError, as for a file without read permission.

    Tests may run as root, for whom chmod 000 stops nothing; Python's open is the first
    thing that touches the file, so refusing it there is what an unreadable file does.
    """
    real_open = Path.open

    def guarded(self: Path, *args, **kwargs):
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded)
