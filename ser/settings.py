"""One check of every numeric setting, run before anything is built or written.

A bad number otherwise surfaces late and far from its name: `trainer.max_epochs=-1`
trains forever, `0` reports an untrained model as results, `seed=abc` fails inside
Lightning with a message that does not say which setting. `validate_settings(cfg)` runs
at the start of `train()` (and of `python -m ser.data` for the dataset groups) and
raises :class:`SettingError` (a :class:`ConfigError`, so ser.cli prints one line and exits 2):

    trainer.max_epochs=-1: expected a whole number >= 1

Checks that need the data (`cv.folds` against the number of utterances or speakers)
stay where the data is known (ser.training.folds).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from ser.errors import ConfigError

# Fold k trains with seed + k: numpy's seeds are 32-bit, so 31 bits leave room for k.
MAX_SEED = 2**31 - 1


class SettingError(ConfigError):
    """A numeric setting outside what the framework can use; the message names it."""


@dataclass(frozen=True)
class Number:
    """What one setting may hold: a whole number or a real one, within bounds, or null."""

    whole: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is excluded
    high_open: bool = False
    nullable: bool = False
    items: int | None = None  # a list of this many such numbers (model.optimizer.betas)

    def describe(self) -> str:
        what = "a whole number" if self.whole else "a number"
        if self.items is not None:
            what = f"a list of {self.items}, each {what}"
        low, high = _bound(self.low), _bound(self.high)
        if self.low is not None and self.high is not None and not self.low_open and not self.high_open:
            what += f" in {low}..{high}"
        else:
            limits = []
            if self.low is not None:
                limits.append(f"{'>' if self.low_open else '>='} {low}")
            if self.high is not None:
                limits.append(f"{'<' if self.high_open else '<='} {high}")
            if limits:
                what += " " + " and ".join(limits)
        return what + (", or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        # bool is an int in Python, but `trainer.max_epochs=true` is not a number.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _bound(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else str(value))


COUNT = Number(whole=True, low=1)  # epochs, blocks, batches: at least one
NON_NEGATIVE_COUNT = Number(whole=True, low=0)
PROBABILITY = Number(low=0, high=1, high_open=True)  # dropout, smoothing: 1 would drop everything
POSITIVE = Number(low=0, low_open=True)
SEED = Number(whole=True, low=0, high=MAX_SEED)

_DATASET_RULES: dict[str, Number] = {
    "batch_size": COUNT,
    "signal_length": Number(whole=True, low=1, nullable=True),
    "num_workers": NON_NEGATIVE_COUNT,
    "load_threads": Number(whole=True, low=1, nullable=True),
}
_FEATURE_RULES: dict[str, Number] = {
    "sample_rate": Number(whole=True, low=1000, high=384_000),
    "n_mfcc": COUNT,
    "n_fft": COUNT,
    "hop_length": COUNT,
    "n_mels": COUNT,
    "top_db": Number(low=0, nullable=True),
    "batch_size": COUNT,  # features=ssl: utterances per forward pass
}
# Checked in this order, so a value interpolated from another setting is reported under
# the name the user typed (fusion.se.reduction before model.net.se_reduction, which reads it).
RULES: dict[str, Number] = {
    **{f"dataset.{key}": rule for key, rule in _DATASET_RULES.items()},
    **{f"test_dataset.{key}": rule for key, rule in _DATASET_RULES.items()},
    **{f"features.{key}": rule for key, rule in _FEATURE_RULES.items()},
    "seed": SEED,
    "trainer.max_epochs": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "cv.folds": Number(whole=True, low=2, nullable=True),
    "cv.seed": Number(whole=True, low=0, high=MAX_SEED, nullable=True),
    "cv.validation": Number(low=0, high=1, low_open=True, high_open=True, nullable=True),
    "fusion.regularizer.rate": PROBABILITY,
    "fusion.se.reduction": COUNT,
    "model.net.filters": COUNT,
    "model.net.num_blocks": COUNT,
    "model.net.block_dropout": PROBABILITY,
    "model.net.branch_rate": PROBABILITY,
    "model.net.se_reduction": COUNT,
    "model.label_smoothing": PROBABILITY,
    "model.optimizer.lr": POSITIVE,
    "model.optimizer.eps": POSITIVE,
    "model.optimizer.betas": Number(low=0, high=1, high_open=True, items=2),
    "model.optimizer.weight_decay": Number(low=0),
    "cross_corpus.repeats": COUNT,
    "callbacks.early_stopping.patience": NON_NEGATIVE_COUNT,
    "callbacks.early_stopping.min_delta": Number(low=0),
}

# Settings bounded by this machine, checked after RULES: each loader worker is a process,
# and more of them than cores adds nothing but processes (a thousand hang the machine).
MACHINE_BOUND = ("dataset.num_workers", "test_dataset.num_workers")

_ABSENT = object()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def validate_settings(cfg: DictConfig, groups: Iterable[str] | None = None) -> None:
    """Raise :class:`SettingError` naming the first numeric setting of `cfg` out of range.

    `groups`: only the settings under these top-level keys (e.g. ``["dataset",
    "features"]`` for the dataset summary); None checks all. Settings the config does
    not have (the group was not chosen) are skipped.
    """
    chosen = None if groups is None else tuple(groups)
    for key, rule in RULES.items():
        if chosen is not None and key.split(".")[0] not in chosen:
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            continue
        if _is_missing(cfg, key):
            continue  # `???`: the group's own check names what to pass
        value = _plain(OmegaConf.select(cfg, key))
        if not _fits(rule, value):
            raise SettingError(f"{key}={_shown(value)}: expected {rule.describe()}")
    for key in MACHINE_BOUND:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if (chosen is None or key.split(".")[0] in chosen) and isinstance(value, int) and value > usable_cores():
            raise SettingError(
                f"{key}={value}: expected at most {usable_cores()}, the CPU cores this process may use "
                f"(each loader worker is a process)"
            )


def check_resolves(cfg: DictConfig, groups: Iterable[str] | None = None) -> None:
    """Raise :class:`ConfigError` naming the first setting that has no value: a `???` left
    unset, or an interpolation that fails (`seed=${oc.env:UNSET}`). Read before anything
    else, so OmegaConf's own multi-line error never reaches the user."""
    for group in cfg if groups is None else groups:
        if group not in cfg:
            continue
        try:
            node = cfg[group]  # a scalar setting is resolved by reading it
            if OmegaConf.is_config(node):
                OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as error:
            raise ConfigError(f"Missing mandatory value: {error.full_key}") from None
        except OmegaConfBaseException as error:
            reason = str(error).splitlines()[0]
            raise ConfigError(f"{error.full_key or group}: {reason}") from None


def _fits(rule: Number, value: Any) -> bool:
    if rule.items is None:
        return rule.accepts(value)
    return isinstance(value, list) and len(value) == rule.items and all(map(rule.accepts, value))


def _is_missing(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf)


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
