"""Using a trained checkpoint without its DataModule: load it, read audio, predict.

A checkpoint written by ``train.py`` carries ``ser_metadata`` (see
``EmotionClassifier.on_save_checkpoint``): the class names, the feature settings
(including ``signal_length``), the network's registry name and constructor arguments,
and the corpus. That is all inference needs; the weights are the ``net.``-prefixed
entries of the Lightning ``state_dict``. Reading the file and building the network are
ser.training.checkpoint's: nothing in the file can run code or name a class to build.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ser.data.feature_kinds import AnyFeatureSettings, feature_settings
from ser.data.features import fix_length, non_finite_message, non_finite_rows
from ser.data.memory import check_features_fit
from ser.data.ssl_features import SSLFeatureSettings, SSLWeightsError, weights_file
from ser.errors import ConfigError, InputError, InputNotFound, NonFiniteError
from ser.training.checkpoint import (
    EXPECTED,
    METADATA_KEY,
    CheckpointError,
    build_network,
    read_checkpoint,
)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass
class LoadedCheckpoint:
    """A network in eval mode with everything needed to feed it new audio."""

    path: Path
    net: nn.Module
    class_names: list[str]
    feature_settings: AnyFeatureSettings
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


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", feature_weights: str | Path | None = None
) -> LoadedCheckpoint:
    """Rebuild the network of a train.py checkpoint and load its weights (eval mode).

    Read and built by ser.training.checkpoint: nothing in the file can run code, and the network
    comes from this project's registry, never from a class path in the file. For features of
    a self-supervised model, `feature_weights` replaces the weights file training used, and
    the file found must hold the bytes training used (the checkpoint's sha256).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    metadata = checkpoint[METADATA_KEY]
    names = metadata["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: '{METADATA_KEY}.class_names' is not a list of names; expected {EXPECTED}")
    class_names = list(names)
    try:
        settings = feature_settings(metadata["feature_settings"])
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: unusable feature settings ({error})") from error
    if isinstance(settings, SSLFeatureSettings):
        settings = trained_feature_model(path, settings, metadata.get("feature_weights_sha256"), feature_weights)
    net = build_network(path, checkpoint)
    num_classes = net.classifier.out_features
    if num_classes != len(class_names):
        raise CheckpointError(
            f"{path}: {len(class_names)} class names but a network with {num_classes} outputs"
        )
    if net.input_dim != settings.num_features:
        raise CheckpointError(
            f"{path}: features have {settings.num_features} dimensions but the network "
            f"expects {net.input_dim}"
        )
    net.to(torch.device(device)).eval()
    return LoadedCheckpoint(path, net, class_names, settings, dict(metadata))


def trained_feature_model(
    path: Path, settings: SSLFeatureSettings, recorded: str | None, weights: str | Path | None
) -> SSLFeatureSettings:
    """`settings` loading the self-supervised weights the network was trained on: the
    checkpoint's own file, or `weights`; refused when its bytes differ from training's."""
    if weights is not None:
        settings = dataclasses.replace(settings, weights=str(weights))
    hint = "give the weights training used with feature_weights=PATH"
    try:
        found = settings.weights_sha256()
    except SSLWeightsError as error:
        raise CheckpointError(f"{path}: trained on {settings.model} features, but {error}; {hint}") from error
    if recorded is not None and found != recorded:
        raise CheckpointError(
            f"{path}: trained on {settings.model} features from weights with sha256 {recorded[:16]}, "
            f"but {weights_file(settings)} has sha256 {found[:16]}; {hint}"
        )
    return settings


def natural_key(path: Path) -> list[Any]:
    """Sort key in which 'file2' comes before 'file10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def find_audio_files(path: str | Path) -> list[Path]:
    """``path`` itself, or every .wav/.flac/.ogg file below a directory, in natural order."""
    path = Path(path)
    if not path.exists():
        raise InputNotFound(f"audio not found: {path} (expected an audio file or a directory)")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"audio={path}: not a regular file or a folder; expected an audio file or a folder of them")
    files = [
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    ]
    if not files:
        raise InputNotFound(
            f"{path}: no audio files below this directory (expected {', '.join(AUDIO_SUFFIXES)})"
        )
    return sorted(files, key=natural_key)


def check_output_path(setting: str, path: str | Path, inputs: dict[str, Sequence[Path]], example: str) -> Path:
    """The file `setting=path` names for a command to write, refused before any work when it
    is a folder, or one of the files the command reads (`inputs`: what they are -> the files):
    writing it would replace the very input. `example`: a file name to suggest instead."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{setting}={path}: a folder; expected a file to write, e.g. {setting}={path / example}")
    for what, files in inputs.items():
        for file in files:
            if path.resolve() == Path(file).resolve() or (path.exists() and os.path.samefile(path, file)):
                raise InputError(f"{setting}={path}: {what}, which writing would replace; expected another file")
    if path.suffix.lower() in (*AUDIO_SUFFIXES, ".ckpt"):
        raise InputError(f"{setting}={path}: the name of an audio file or a checkpoint; expected e.g. {example}")
    return path


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device={name!r}: expected cpu, cuda, cuda:N or auto") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: CUDA is not available on this machine; use device=cpu")
    return device


def load_waveforms(files: Sequence[Path], settings: AnyFeatureSettings) -> torch.Tensor:
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
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    device = next(loaded.net.parameters()).device
    files = list(files)
    check_features_fit(
        loaded.feature_settings, min(batch_size, len(files)), batch_size, f"{loaded.path}'s feature settings",
        "give a smaller batch_size",
    )
    predictions: list[Prediction] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        waveforms = load_waveforms(chunk, loaded.feature_settings)
        features = loaded.feature_settings.extract(waveforms, device=device)
        for row in non_finite_rows(features):  # no "predicted" class from NaN probabilities
            raise NonFiniteError(non_finite_message(str(chunk[row]), waveforms[row]))
        probabilities = torch.softmax(loaded.net(features.to(device)).float(), dim=1).cpu().numpy()
        if not np.isfinite(probabilities).all():
            raise NonFiniteError(f"{loaded.path}: its network gives probabilities that are not finite; damaged weights?")
        predictions.extend(Prediction(file, row) for file, row in zip(chunk, probabilities, strict=True))
    return predictions
