"""Frame features of a self-supervised speech model (wav2vec 2.0, HuBERT, WavLM), `features=ssl`.

The model is a torchaudio pipeline bundle named by `features.model` (checked against
`SSL_BUNDLES`), built from the bundle's parameters; its weights come from
`features.weights=PATH`, else torchaudio's download cache, else (`features.download=true`)
a download into it, and are always read with `torch.load(weights_only=True)`. Audio read
at the bundle's rate and cut to `signal_length` runs through the model in batches; the
features are one transformer layer's output (`layer`) or all layers' mean (`layer=mean`):
(N, frames, width), 50 frames a second. The cache key holds the model, layer, signal
length and the weights' sha256.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from ser.data.features import longest_signal
from ser.errors import ConfigError, InputError

# The self-supervised bundles of torchaudio.pipelines (the ASR fine-tuned ones are left
# out: their features are trained for characters, not for speech in general).
SSL_BUNDLES = (
    "WAV2VEC2_BASE", "WAV2VEC2_LARGE", "WAV2VEC2_LARGE_LV60K",
    "WAV2VEC2_XLSR53", "WAV2VEC2_XLSR_300M", "WAV2VEC2_XLSR_1B", "WAV2VEC2_XLSR_2B",
    "HUBERT_BASE", "HUBERT_LARGE", "HUBERT_XLARGE",
    "WAVLM_BASE", "WAVLM_BASE_PLUS", "WAVLM_LARGE",
)
DEFAULT_MODEL = "WAVLM_BASE_PLUS"
MEAN = "mean"
# torchaudio's own download location for a bundle's file name (_get_state_dict).
DOWNLOAD_ROOT = "https://download.pytorch.org/torchaudio/models/"
# Prefix of a state dict saved from the wrapper torchaudio puts around the large models
# (bundle.get_model() normalises their waveforms in an outer module).
WRAPPED_PREFIX = "model."


class SSLWeightsError(InputError):
    """Weights of a self-supervised model that are missing or unusable; names the file."""


def bundle(name: str) -> Any:
    """The torchaudio pipeline bundle `name`, one of `SSL_BUNDLES`.

    Its architecture (`_model_type`, `_params`), weights file (`_path`) and input
    normalisation (`_normalize_waveform`) are private fields: the bundle's public
    `get_model()` downloads the weights, which an offline cluster cannot, and nothing
    public says the rest. They are read in this module only (torchaudio pinned in
    constraints.txt), which tests/data/test_ssl_features.py exercises.
    """
    if name not in SSL_BUNDLES:
        raise ConfigError(f"features.model={name!r}: expected one of {list(SSL_BUNDLES)}")
    return getattr(torchaudio.pipelines, name)


def architecture(name: str) -> nn.Module:
    """The bundle's network with random weights (torchaudio's builder and parameters)."""
    spec = bundle(name)
    # The builders torchaudio's bundle uses for its model types (utils._get_model).
    factory = {"Wav2Vec2": torchaudio.models.wav2vec2_model, "WavLM": torchaudio.models.wavlm_model}
    return factory[spec._model_type](**spec._params)


def frames_for(samples: int, conv_layers: list[tuple[int, int, int]]) -> int:
    """Frames the convolutional feature encoder makes of `samples` (no padding)."""
    for _channels, kernel, stride in conv_layers:
        samples = (samples - kernel) // stride + 1
    return max(samples, 0)


@dataclass(frozen=True)
class SSLFeatureSettings:
    """What defines `features=ssl` features; see the module doc."""

    kind: str = "ssl"
    model: str = DEFAULT_MODEL
    layer: int | str = MEAN
    weights: str | None = None
    download: bool = False
    batch_size: int = 8
    signal_length: int = 64000

    def __post_init__(self) -> None:
        params = bundle(self.model)._params
        layer = self.layer
        if isinstance(layer, bool) or not (layer == MEAN or isinstance(layer, int)):
            raise ConfigError(f"features.layer={layer!r}: expected a layer index or '{MEAN}'")
        if isinstance(layer, int) and not 0 <= layer < params["encoder_num_layers"]:
            raise ConfigError(
                f"features.layer={layer}: expected 0..{params['encoder_num_layers'] - 1} "
                f"({self.model} has {params['encoder_num_layers']} layers) or '{MEAN}'"
            )
        for name, high in (("batch_size", 4096), ("signal_length", longest_signal(self.sample_rate))):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigError(f"features.{name}={value!r}: expected a whole number in 1..{high}")
        if self.num_frames < 1:
            raise ConfigError(
                f"signal length {self.signal_length} is shorter than one frame of {self.model} "
                f"({params['extractor_conv_layer_config'][0][1]} samples)"
            )

    @staticmethod
    def rate_of(values: Mapping[str, Any]) -> int:
        """The rate audio is read at for settings made of `values`: the bundle's."""
        return int(bundle(str(values.get("model", DEFAULT_MODEL))).sample_rate)

    @property
    def sample_rate(self) -> int:
        return int(bundle(self.model).sample_rate)

    @property
    def num_features(self) -> int:
        return int(bundle(self.model)._params["encoder_embed_dim"])

    @property
    def num_frames(self) -> int:
        return frames_for(self.signal_length, bundle(self.model)._params["extractor_conv_layer_config"])

    def memory_per_utterance(self) -> tuple[int, int]:
        """Bytes of one utterance's features, and (roughly) what extracting it takes: its
        waveform, and the feature encoder's first convolution, 512 channels at a fifth of the
        rate (about 400 bytes per sample), with its normalisation as much again."""
        stored = 4 * self.num_frames * self.num_features
        return stored, 4 * self.signal_length + 800 * self.signal_length + stored

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def weights_sha256(self) -> str:
        """sha256 of the weights file these settings load (see `weights_file`)."""
        return file_digest(weights_file(self))

    def key(self) -> str:
        """A hash of what the features depend on: model, layer, length, the weights' bytes."""
        defining = {
            "kind": self.kind, "model": self.model, "layer": self.layer,
            "signal_length": self.signal_length, "weights_sha256": self.weights_sha256(),
        }
        text = json.dumps(defining, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def extract(self, waveforms: Tensor, device: torch.device | str | None = None) -> Tensor:
        """Features (N, num_frames, num_features) of waveforms (N, signal_length) at `sample_rate`."""
        device = torch.device(device) if device is not None else waveforms.device
        path = weights_file(self)
        net = loaded_model(self.model, str(path), file_digest(path), str(device))
        return frame_features(
            net, waveforms, self.layer, bundle(self.model)._normalize_waveform, self.batch_size, device
        )


def cached_download(name: str) -> Path:
    """Where torchaudio's `bundle.get_model()` keeps the downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(bundle(name)._path)


def weights_file(settings: SSLFeatureSettings) -> Path:
    """The weights to load: `features.weights`, else torchaudio's cached download, else
    (`features.download=true`) a download into that cache; otherwise what to do."""
    if settings.weights:
        path = Path(settings.weights).expanduser()
        if not path.is_file():
            raise SSLWeightsError(f"features.weights={settings.weights}: file not found: {path}")
        return path.resolve()
    cached = cached_download(settings.model)
    if cached.is_file():
        return cached
    if settings.download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(DOWNLOAD_ROOT + bundle(settings.model)._path, str(cached))
        return cached
    raise SSLWeightsError(
        f"features=ssl: no weights for {settings.model} (not in torchaudio's download cache "
        f"{cached}); pass features.weights=PATH, a state dict saved where the internet is "
        f"reachable with: python -c \"import torch, torchaudio; torch.save(torchaudio.pipelines."
        f"{settings.model}.get_model().state_dict(), '{settings.model}.pt')\", or set "
        f"features.download=true to download it into that cache"
    )


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime)."""
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


def read_state_dict(path: Path, name: str) -> dict[str, Tensor]:
    """A state dict (names -> tensors) from `path`, unpickled with weights_only=True."""
    try:
        with warnings.catch_warnings():  # the error below says what is wrong with the file
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable or unsafe pickle: one message naming the file
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        reason = lines[0]
        refusal = [i for i, line in enumerate(lines) if "WeightsUnpickler error" in line]
        if refusal and refusal[0] + 1 < len(lines):  # torch's refusal: the line that says what
            reason = f"refused, it holds more than tensors: {lines[refusal[0] + 1]}"
        raise SSLWeightsError(
            f"{path}: cannot be read as a state dict with torch.load(weights_only=True) ({reason})"
        ) from None
    if not isinstance(state, dict) or not state or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise SSLWeightsError(
            f"{path}: expected a state dict (parameter names -> tensors) of {name}'s model, "
            f"got a {type(state).__name__}"
        )
    if all(key.startswith(WRAPPED_PREFIX) for key in state):
        state = {key[len(WRAPPED_PREFIX):]: value for key, value in state.items()}
    return state


def load_weights(
    net: nn.Module, state: Mapping[str, Tensor], path: Path, name: str, check_only: bool = False
) -> None:
    """Load `state` into `net`, refusing (by name) weights of another architecture;
    `check_only`: compare names and shapes only (`net` may live on the meta device)."""
    own = net.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [key for key in own if key in state and state[key].shape != own[key].shape]
    if missing or unexpected or shapes:
        problems = [
            f"{len(items)} {what} (e.g. {items[0]})"
            for what, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
            if items
        ]
        raise SSLWeightsError(f"{path}: not the weights of {name}'s model: parameters {', '.join(problems)}")
    if not check_only:
        net.load_state_dict(state)


@functools.lru_cache(maxsize=2)
def loaded_model(name: str, path: str, digest: str, device: str) -> nn.Module:
    """The bundle's network with the weights at `path`, in eval mode on `device`.

    Cached per (model, file, digest, device): the corpus's batches share one copy.
    """
    state = read_state_dict(Path(path), name)
    with torch.device("meta"):  # names and shapes checked before anything is allocated
        load_weights(architecture(name), state, Path(path), name, check_only=True)
    net = architecture(name)
    load_weights(net, state, Path(path), name)
    return net.to(torch.device(device)).eval()


def frame_features(
    net: nn.Module, waveforms: Tensor, layer: int | str, normalize: bool, batch_size: int,
    device: torch.device,
) -> Tensor:
    """One layer's output (or the mean of all layers) for each waveform, in batches.

    `normalize`: zero mean and unit variance per waveform, as torchaudio's wrapper does
    for the large models. Returns float32 on the waveforms' device.
    """
    pieces = []
    with torch.inference_mode():
        for start in range(0, waveforms.shape[0], batch_size):
            chunk = waveforms[start : start + batch_size].to(device, torch.float32)
            if normalize:
                chunk = nn.functional.layer_norm(chunk, chunk.shape[-1:])
            if layer == MEAN:
                outputs, _ = net.extract_features(chunk)
                features = torch.stack(outputs).mean(dim=0)
            else:
                outputs, _ = net.extract_features(chunk, num_layers=int(layer) + 1)
                features = outputs[int(layer)]
            pieces.append(features.float().to(waveforms.device))
    return torch.cat(pieces)
