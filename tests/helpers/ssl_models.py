"""Self-supervised models for tests, nothing downloaded: torchaudio's architectures with
random weights, at the bundle's real size or shrunk (same convolution strides, so the
same frame rate; a narrow, shallow transformer)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from ser.data import ssl_features

# The real look-up, taken before any test replaces it.
REAL_BUNDLE = ssl_features.bundle
TINY_WIDTH = 32
TINY_LAYERS = 3


def shrunk_bundle(name: str) -> types.SimpleNamespace:
    """The bundle `name` with a shrunk architecture: its conv kernels and strides, 16
    channels, a 3-layer transformer 32 wide."""
    real = REAL_BUNDLE(name)
    params = dict(real._params)
    params.update(
        extractor_conv_layer_config=[(16, kernel, stride) for _, kernel, stride in params["extractor_conv_layer_config"]],
        encoder_embed_dim=TINY_WIDTH, encoder_num_layers=TINY_LAYERS, encoder_num_heads=2,
        encoder_ff_interm_features=64, encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4,
    )
    return types.SimpleNamespace(
        sample_rate=real.sample_rate, _params=params, _model_type=real._model_type,
        _normalize_waveform=real._normalize_waveform, _path=real._path,
    )


def use_shrunk_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bundle name resolves to its shrunk architecture (the name is still checked)."""
    monkeypatch.setattr(ssl_features, "bundle", shrunk_bundle)
    ssl_features.loaded_model.cache_clear()


def save_random_weights(name: str, path: Path, seed: int = 0) -> Path:
    """A state dict of `name`'s architecture (as `ssl_features.bundle` gives it) with random weights."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ssl_features.architecture(name).state_dict(), path)
    return path
