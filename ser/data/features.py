"""The feature recipe: TIM-Net's MFCCs (or log-Mel spectrograms), signal length fixing, cache keys.

The reference computes features one file at a time with librosa 0.8.1. Here the same
recipe runs batched in torchaudio, with two details made explicit so that a batch gives
exactly what per-utterance librosa gives:

- the dB conversion clips at ``max - top_db`` *per utterance* (torchaudio's
  ``AmplitudeToDB`` would use one maximum for a whole 3-D batch);
- the STFT centring pad mode is a setting: ``"constant"`` (librosa >= 0.10) or
  ``"reflect"`` (librosa 0.8.1, which produced the published numbers).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torchaudio
from torch import Tensor

from ser.data.audio import MAX_SAMPLE_RATE, MAX_SECONDS
from ser.errors import ConfigError

FeatureKind = Literal["mfcc", "logmel"]

FEATURE_KINDS = ("mfcc", "logmel")
PAD_MODES = ("constant", "reflect")

# librosa.power_to_db defaults used by librosa.feature.mfcc: ref 1.0, amin 1e-10.
_AMIN = 1e-10
_REF = 1.0

# Keys Hydra adds to instantiable configs; they describe the config, not the settings.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})

_INT_FIELDS = ("sample_rate", "signal_length", "n_mfcc", "n_fft", "hop_length", "n_mels")
_HIGHEST = {"sample_rate": MAX_SAMPLE_RATE, "n_fft": 2**16, "n_mels": 2048, "n_mfcc": 2048}


def longest_signal(sample_rate: int) -> int:
    """The most samples a signal may have at `sample_rate`: as long as the longest audio file
    read (ser.data.audio.MAX_SECONDS, an hour)."""
    return int(MAX_SECONDS * sample_rate)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that defines a feature matrix; the defaults are TIM-Net's EMODB recipe.

    ``pad_mode`` is how the STFT pads the signal ends for centred frames: ``"constant"``
    (zeros, librosa >= 0.10) or ``"reflect"`` (librosa 0.8.1, used by the reference).
    ``top_db`` clips each utterance's dB spectrogram at its maximum minus ``top_db``
    (``None`` disables clipping). ``f_max=None`` means ``sample_rate / 2``.
    """

    kind: FeatureKind = "mfcc"
    sample_rate: int = 22050
    signal_length: int = 96000
    n_mfcc: int = 39
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    pad_mode: str = "constant"
    top_db: float | None = 80.0
    f_min: float = 0.0
    f_max: float | None = None

    def __post_init__(self) -> None:
        # Normalise numeric types first: YAML gives 80 or 22050.0 as easily as 80.0 or
        # 22050, and the cache key must not depend on how a number was spelled.
        for name in _INT_FIELDS:
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))
        for name in ("top_db", "f_min", "f_max"):
            value = getattr(self, name)
            if value is None and name != "f_min":
                continue
            object.__setattr__(self, name, _as_float(name, value))

        if self.kind not in FEATURE_KINDS:
            raise ConfigError(
                f"FeatureSettings.kind must be one of {FEATURE_KINDS}, got {self.kind!r}"
            )
        if self.pad_mode not in PAD_MODES:
            raise ConfigError(
                f"FeatureSettings.pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}"
            )
        for name in _INT_FIELDS:
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"FeatureSettings.{name} must be positive, got {getattr(self, name)}"
                )
        # Upper bounds, checked before a filter bank or a signal is allocated (a checkpoint's
        # settings are read from a file): far beyond any recipe, within what memory holds.
        highest = {**_HIGHEST, "signal_length": longest_signal(self.sample_rate)}
        for name, high in highest.items():
            if getattr(self, name) > high:
                raise ConfigError(f"FeatureSettings.{name}={getattr(self, name)}: expected at most {high}")
        if self.n_mfcc > self.n_mels:
            raise ConfigError(
                f"FeatureSettings.n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})"
            )
        if self.hop_length > self.n_fft:
            raise ConfigError(
                f"FeatureSettings.hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft})"
            )
        if self.pad_mode == "reflect" and self.signal_length <= self.n_fft // 2:
            raise ConfigError(
                f"FeatureSettings.signal_length ({self.signal_length}) must exceed n_fft // 2 "
                f"({self.n_fft // 2}) for pad_mode 'reflect'"
            )
        if self.top_db is not None and self.top_db < 0:
            raise ConfigError(
                f"FeatureSettings.top_db must be non-negative or None, got {self.top_db}"
            )
        nyquist = self.sample_rate / 2
        if not 0 <= self.f_min < nyquist:
            raise ConfigError(
                f"FeatureSettings.f_min must lie in [0, {nyquist}) Hz, got {self.f_min}"
            )
        if self.f_max is not None and not self.f_min < self.f_max <= nyquist:
            raise ConfigError(
                f"FeatureSettings.f_max must lie in (f_min={self.f_min}, {nyquist}] Hz or be None, "
                f"got {self.f_max}"
            )

    @property
    def num_features(self) -> int:
        """Feature dimension: MFCC coefficients or mel bands."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def num_frames(self) -> int:
        """Frames per utterance with centred STFT frames."""
        return 1 + self.signal_length // self.hop_length

    @staticmethod
    def rate_of(values: Mapping[str, Any]) -> int:
        """The sample rate settings made of `values` read audio at."""
        return _as_int("sample_rate", values.get("sample_rate", 22050))

    def memory_per_utterance(self) -> tuple[int, int]:
        """Bytes of one utterance's features, and what extracting it takes at once: its
        waveform, STFT (complex, then power) and mel spectrogram (dB, clipped)."""
        frames, bins = self.num_frames, self.n_fft // 2 + 1
        stored = 4 * frames * self.num_features
        return stored, 4 * self.signal_length + 12 * bins * frames + 12 * self.n_mels * frames + stored

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serialisable), e.g. for checkpoints."""
        return dataclasses.asdict(self)

    def extract(self, waveforms: Tensor, device: torch.device | str | None = None) -> Tensor:
        """`extract_features` with these settings (the interface every recipe shares)."""
        return extract_features(waveforms, self, device=device)

    def key(self) -> str:
        """A short, stable hash of every field, for feature cache keys."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _as_int(name: str, value: Any) -> int:
    # bool is an int subclass; True as a sample rate is surely a config mistake.
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"FeatureSettings.{name} must be an integer, got {value!r}")
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise ConfigError(f"FeatureSettings.{name} must be an integer, got {value!r}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"FeatureSettings.{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"FeatureSettings.{name} must be finite, got {value!r}")
    return float(value)


def non_finite_rows(features: Tensor) -> list[int]:
    """The rows (utterances) of a feature batch holding NaN or infinity."""
    return torch.nonzero(~torch.isfinite(features.reshape(len(features), -1)).all(dim=1)).flatten().tolist()


def non_finite_message(path: str, signal: np.ndarray | Tensor) -> str:
    """Why a file's features are refused: its samples are finite, but too large for them."""
    peak = float(abs(signal).max()) if len(signal) else 0.0
    return (
        f"{path}: its features are not finite (NaN or infinity) although its samples are (peak {peak:.3g}); "
        f"expected audio samples of ordinary size (within [-1, 1] for a float file)"
    )


def fix_length(signal: np.ndarray | Tensor, length: int) -> np.ndarray | Tensor:
    """Centre-crop or symmetrically zero-pad the last axis to ``length`` samples, as TIM-Net.

    Shorter: ``pad // 2`` zeros on the left and ``pad // 2 + pad % 2`` on the right.
    Longer: keep ``length`` samples starting at ``(len - length) // 2``.
    Works on NumPy arrays and tensors of any leading shape; returns the same type.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    current = signal.shape[-1]
    if current == length:
        return signal
    if current > length:
        start = (current - length) // 2
        return signal[..., start : start + length]
    pad = length - current
    left, right = pad // 2, pad // 2 + pad % 2
    if isinstance(signal, Tensor):
        return torch.nn.functional.pad(signal, (left, right))
    widths = [(0, 0)] * (signal.ndim - 1) + [(left, right)]
    return np.pad(signal, widths)


class _Extractor(torch.nn.Module):
    """Mel power spectrogram -> per-utterance dB -> optional DCT, for one settings value."""

    def __init__(self, settings: FeatureSettings) -> None:
        super().__init__()
        self.settings = settings
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=settings.sample_rate,
            n_fft=settings.n_fft,
            hop_length=settings.hop_length,
            f_min=settings.f_min,
            f_max=settings.f_max,
            n_mels=settings.n_mels,
            power=2.0,
            center=True,
            pad_mode=settings.pad_mode,
            norm="slaney",
            mel_scale="slaney",
        )
        if settings.kind == "mfcc":
            # (n_mels, n_mfcc): DCT-II with ortho norm, as scipy's dct in librosa.
            dct = torchaudio.functional.create_dct(settings.n_mfcc, settings.n_mels, "ortho")
            self.register_buffer("dct", dct)
        else:
            self.dct = None

    def forward(self, waveforms: Tensor) -> Tensor:
        power = self.mel(waveforms)  # (batch, n_mels, frames)
        db = 10.0 * torch.log10(torch.clamp(power, min=_AMIN)) - 10.0 * math.log10(max(_AMIN, _REF))
        top_db = self.settings.top_db
        if top_db is not None:
            # Per utterance, as librosa clips each file on its own maximum. Not
            # AmplitudeToDB: on a 3-D (batch, mels, frames) input it treats the batch as
            # channels of one signal and clips everything at the loudest item's maximum.
            floor = db.amax(dim=(-2, -1), keepdim=True) - top_db
            db = torch.maximum(db, floor)
        db = db.transpose(-1, -2)  # (batch, frames, n_mels)
        if self.dct is not None:
            return db @ self.dct
        return db


@functools.lru_cache(maxsize=16)
def _extractor(settings: FeatureSettings, device: torch.device) -> _Extractor:
    # Filter banks and windows are built once per (settings, device), not per call.
    return _Extractor(settings).to(device).eval()


def extract_features(
    waveforms: Tensor,
    settings: FeatureSettings,
    device: torch.device | str | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Features of a batch of waveforms at ``settings.sample_rate``.

    ``waveforms`` is a float tensor (N, L); each row is first brought to
    ``settings.signal_length`` with :func:`fix_length` (a no-op when L already matches).
    Computation runs on ``device`` (default: the waveforms' device) in chunks of
    ``batch_size`` rows. Returns float32 (N, settings.num_frames, settings.num_features)
    on the waveforms' device; each row equals what the row alone would give.
    """
    if not isinstance(waveforms, Tensor):
        raise TypeError(f"waveforms must be a torch.Tensor, got {type(waveforms).__name__}")
    if waveforms.dim() != 2:
        raise ValueError(
            f"waveforms must have shape (N, L), got {tuple(waveforms.shape)}; "
            "use waveforms.unsqueeze(0) for a single signal"
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    compute_device = torch.device(device) if device is not None else waveforms.device
    extractor = _extractor(settings, compute_device)
    fixed = fix_length(waveforms, settings.signal_length)
    out = torch.empty(
        (waveforms.shape[0], settings.num_frames, settings.num_features),
        dtype=torch.float32,
        device=waveforms.device,
    )
    with torch.no_grad():
        for start in range(0, waveforms.shape[0], batch_size):
            chunk = fixed[start : start + batch_size].to(compute_device, torch.float32)
            out[start : start + batch_size] = extractor(chunk).to(out.device)
    return out
