"""Which feature recipe a `features` config names, and its settings for one corpus.

`features.kind` chooses the settings class: `mfcc` and `logmel` are TIM-Net's recipe
(ser.data.features.FeatureSettings), `ssl` frame features of a self-supervised model
(ser.data.ssl_features.SSLFeatureSettings). Both give `sample_rate` (what audio is read
at), `signal_length` (samples at that rate), `num_frames`, `num_features`, `key()` for
the cache and `extract(waveforms, device)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ser.data.features import HYDRA_KEYS, FeatureSettings, longest_signal
from ser.data.ssl_features import SSLFeatureSettings
from ser.errors import ConfigError

AnyFeatureSettings = FeatureSettings | SSLFeatureSettings
SETTINGS_BY_KIND: dict[str, type] = {
    "mfcc": FeatureSettings, "logmel": FeatureSettings, "ssl": SSLFeatureSettings,
}


def feature_settings(
    features: Mapping[str, Any] | AnyFeatureSettings,
    signal_length: int | None = None,
    seconds: float | None = None,
) -> AnyFeatureSettings:
    """The settings `features` describes, for signals of `signal_length` samples at the
    recipe's rate, or (`signal_length` None) of `seconds` at that rate, or (both None)
    of the length `features` itself holds.

    Unknown keys are refused by name (a misspelt `n_mfc` must not fall back to a default).
    """
    if dataclasses.is_dataclass(features):
        values = dataclasses.asdict(features)
    else:
        values = {str(k): v for k, v in dict(features).items() if str(k) not in HYDRA_KEYS}
    kind = str(values.get("kind", "mfcc"))
    cls = SETTINGS_BY_KIND.get(kind)
    if cls is None:
        raise ConfigError(f"features.kind must be one of {sorted(SETTINGS_BY_KIND)}, got {kind!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown feature setting(s) {unknown} for features.kind={kind}; valid: {sorted(known)}")
    if signal_length is not None and not isinstance(signal_length, bool) and isinstance(signal_length, int):
        rate = cls.rate_of(values)
        if signal_length > longest_signal(rate):  # the dataset's setting, named as the user typed it
            raise ConfigError(
                f"dataset.signal_length={signal_length}: expected at most {longest_signal(rate)} samples "
                f"(an hour at {rate} Hz), or null"
            )
    if signal_length is None and seconds is None and "signal_length" in values:
        signal_length = values["signal_length"]  # settings that carry their length (checkpoints)
    if signal_length is None:
        if seconds is None:
            raise ValueError("a signal length or a duration is needed")
        signal_length = max(1, round(seconds * cls.rate_of(values)))
    return cls(**{**values, "signal_length": int(signal_length)})


def feature_weights_sha256(settings: AnyFeatureSettings) -> str | None:
    """sha256 of the model weights the features come from (`ssl`); None for MFCC/log-mel."""
    return settings.weights_sha256() if isinstance(settings, SSLFeatureSettings) else None
