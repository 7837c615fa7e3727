"""Using a trained checkpoint without its DataModule: load it, read audio, predict.

A checkpoint written by ``train.py`` carries ``ser_metadata`` (see
``EmotionClassifier.on_save_checkpoint``): the class names, the feature settings
(including ``signal_length``), the network's ``_target_`` and constructor arguments, and
the corpus. That is all inference needs; the weights are the ``net.``-prefixed entries of
the Lightning ``state_dict``.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ser.features import FeatureSettings, extract_features, fix_length, settings_from_mapping

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
METADATA_KEY = "ser_metadata"
NET_PREFIX = "net."
# Only networks of this package may be built from a checkpoint: `_target_` comes from the
# file, and instantiating an arbitrary callable named there would run arbitrary code.
ALLOWED_TARGET_PREFIX = "ser.models."
_EXPECTED = "a checkpoint written by `python train.py` (e.g. OUTPUT_DIR/checkpoints/fold_00/last.ckpt)"


class CheckpointError(ValueError):
    """A file given as a checkpoint is not a usable checkpoint of this framework."""


@dataclass
class LoadedCheckpoint:
    """A network in eval mode with everything needed to feed it new audio."""

    path: Path
    net: nn.Module
    class_names: list[str]
    feature_settings: FeatureSettings
    metadata: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, int]:
        """(frames, features) of one utterance as the network was trained on it."""
        return self.feature_settings.num_frames, self.feature_settings.num_features


@dataclass(frozen=True)
class Prediction:
    """Class probabilities of one audio file."""

    path: Path
    probabilities: np.ndarray  # (num_classes,), sums to 1

    def predicted(self, class_names: Sequence[str]) -> str:
        return class_names[int(np.argmax(self.probabilities))]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded safely; a clear error for any other file.

    Loading uses ``weights_only=True``: only tensors and plain containers are unpickled.
    This is enough for train.py's checkpoints, whose ``hyper_parameters`` and
    ``ser_metadata`` are stored as plain dicts and lists. The trade-off: a checkpoint
    that pickles other objects (e.g. an OmegaConf ``DictConfig`` in its hyperparameters)
    is refused rather than loaded, because ``weights_only=False`` would let the file run
    arbitrary code. Should such checkpoints ever need support, the classes belong in a
    ``torch.serialization.safe_globals`` allow-list, not in turning the check off.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected {_EXPECTED})")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; expected {_EXPECTED}")
    # torch.save (and Lightning) write zip archives; checking first gives a clear message
    # for text files, audio and the like instead of an unpickling error.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (no torch.save zip archive); expected {_EXPECTED}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: holds pickled objects other than tensors and plain containers, which are "
            f"not loaded for safety ({first_line}); expected {_EXPECTED}"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path}: could not be read as a PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); expected {_EXPECTED}"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path}: holds a {type(checkpoint).__name__}, not a checkpoint dict; expected {_EXPECTED}"
        )
    if "state_dict" not in checkpoint:
        keys = ", ".join(sorted(map(str, checkpoint))[:8]) or "none"
        raise CheckpointError(
            f"{path}: has no 'state_dict' (keys: {keys}), so it is not a Lightning "
            f"checkpoint; expected {_EXPECTED}"
        )
    if METADATA_KEY not in checkpoint:
        raise CheckpointError(
            f"{path}: a Lightning checkpoint without '{METADATA_KEY}' (class names, feature "
            f"settings, network), so it cannot be used without its DataModule; expected {_EXPECTED}"
        )
    return checkpoint


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the network of a train.py checkpoint and load its weights (eval mode)."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    metadata = checkpoint[METADATA_KEY]
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: '{METADATA_KEY}' is not a dict; expected {_EXPECTED}")
    missing = [key for key in ("class_names", "feature_settings", "net") if key not in metadata]
    if missing:
        raise CheckpointError(
            f"{path}: '{METADATA_KEY}' lacks {', '.join(missing)}; expected {_EXPECTED}"
        )
    class_names = [str(name) for name in metadata["class_names"]]
    try:
        settings = settings_from_mapping(metadata["feature_settings"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: unusable feature settings ({error})") from error
    net = build_net(path, metadata["net"])
    num_classes = metadata["net"].get("num_classes")
    if num_classes is not None and int(num_classes) != len(class_names):
        raise CheckpointError(
            f"{path}: {len(class_names)} class names but a network with {num_classes} outputs"
        )
    input_dim = metadata["net"].get("input_dim")
    if input_dim is not None and int(input_dim) != settings.num_features:
        raise CheckpointError(
            f"{path}: features have {settings.num_features} dimensions but the network "
            f"expects {input_dim}"
        )
    weights = {
        key[len(NET_PREFIX):]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(NET_PREFIX)
    }
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        summary = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: the weights do not fit the network described in '{METADATA_KEY}' ({summary})"
        ) from error
    net.to(torch.device(device)).eval()
    return LoadedCheckpoint(path, net, class_names, settings, dict(metadata))


def build_net(path: Path, net_config: Any) -> nn.Module:
    """Instantiate the network described by a checkpoint's ``ser_metadata['net']``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not isinstance(net_config, dict) or not isinstance(net_config.get("_target_"), str):
        raise CheckpointError(f"{path}: '{METADATA_KEY}.net' has no _target_; expected {_EXPECTED}")
    target = net_config["_target_"]
    if not target.startswith(ALLOWED_TARGET_PREFIX):
        raise CheckpointError(
            f"{path}: network _target_ {target!r} is outside {ALLOWED_TARGET_PREFIX}*; "
            "refusing to instantiate it"
        )
    try:
        net = instantiate(net_config, _convert_="all")
    except InstantiationException as error:
        raise CheckpointError(f"{path}: cannot build network {target!r} ({error})") from error
    if not isinstance(net, nn.Module):
        raise CheckpointError(f"{path}: {target!r} did not build a torch module")
    return net


def natural_key(path: Path) -> list[Any]:
    """Sort key in which 'file2' comes before 'file10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def find_audio_files(path: str | Path) -> list[Path]:
    """``path`` itself, or every .wav/.flac/.ogg file below a directory, in natural order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio not found: {path} (expected an audio file or a directory)")
    if path.is_file():
        return [path]
    files = [
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    ]
    if not files:
        raise FileNotFoundError(
            f"{path}: no audio files below this directory (expected {', '.join(AUDIO_SUFFIXES)})"
        )
    return sorted(files, key=natural_key)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={name!r}: expected cpu, cuda, cuda:N or auto") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available on this machine; use device=cpu")
    return device


def load_waveforms(files: Sequence[Path], settings: FeatureSettings) -> torch.Tensor:
    """The files as one (N, signal_length) tensor: resampled, mono, length fixed."""
    from ser.data.audio import load_audio

    signals = [fix_length(load_audio(file, settings.sample_rate), settings.signal_length) for file in files]
    return torch.from_numpy(np.stack(signals))


@torch.inference_mode()
def predict_files(
    loaded: LoadedCheckpoint, files: Iterable[Path], batch_size: int = 16
) -> list[Prediction]:
    """Class probabilities for each file, read and featurised as at training time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(loaded.net.parameters()).device
    files = list(files)
    predictions: list[Prediction] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        waveforms = load_waveforms(chunk, loaded.feature_settings)
        features = extract_features(waveforms, loaded.feature_settings, device=device)
        probabilities = torch.softmax(loaded.net(features.to(device)).float(), dim=1).cpu().numpy()
        predictions.extend(Prediction(file, row) for file, row in zip(chunk, probabilities, strict=True))
    return predictions
