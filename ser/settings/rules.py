"""What a setting may hold, declared beside its field, and the one check of it.

A field of a settings dataclass (ser.settings.data, ser.settings.run) names its range
with `setting(RULE)`; `Checked.__post_init__` checks every such field when the object is
built, so a value outside its range is refused once, where the typed settings are made,
with a message naming the setting:

    trainer.max_epochs=-1: expected a whole number >= 1

A group's dataclass does not know where it sits in the config (`dataset` or
`test_dataset`): it names the field, and `SettingError.within(prefix)` adds the group.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from ser.errors import ConfigError

# Fold k trains with seed + k: numpy's seeds are 32-bit, so 31 bits leave room for k.
MAX_SEED = 2**31 - 1
RULE_KEY = "rule"


class SettingError(ConfigError):
    """A setting outside what the framework can use; the message names it."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(f"{key}={shown(value)}: expected {expected}")
        self.key, self.value, self.expected = key, value, expected

    def within(self, prefix: str) -> SettingError:
        """The same error, its key under `prefix` (the group the settings belong to)."""
        return SettingError(f"{prefix}.{self.key}", self.value, self.expected)


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

    def fits(self, value: Any) -> bool:
        """Whether `value` is what the setting may hold (a list of `items` such numbers)."""
        if self.items is None:
            return self.accepts(value)
        return isinstance(value, list | tuple) and len(value) == self.items and all(map(self.accepts, value))


def _bound(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else str(value))


COUNT = Number(whole=True, low=1)  # epochs, blocks, batches: at least one
NON_NEGATIVE_COUNT = Number(whole=True, low=0)
PROBABILITY = Number(low=0, high=1, high_open=True)  # dropout, smoothing: 1 would drop everything
POSITIVE = Number(low=0, low_open=True)
SEED = Number(whole=True, low=0, high=MAX_SEED)
OPTIONAL_COUNT = Number(whole=True, low=1, nullable=True)


def setting(rule: Number, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose values `rule` bounds (checked by `Checked`)."""
    return dataclasses.field(default=default, metadata={RULE_KEY: rule})


def field_rule(cls: type, name: str) -> Number | None:
    """The rule of field `name` of the settings dataclass `cls`, if it has one."""
    found = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    return None if found is None else found.metadata.get(RULE_KEY)


def shown(value: Any) -> str:
    """A value as a user types it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return f"[{', '.join(map(shown, value))}]"
    return str(value)


class Checked:
    """A settings dataclass whose fields are checked against their rules when it is built.

    Subclasses add checks of several fields together in `check()`.
    """

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            rule = item.metadata.get(RULE_KEY)
            value = getattr(self, item.name)
            if rule is not None and not rule.fits(value):
                raise SettingError(item.name, value, rule.describe())
        self.check()

    def check(self) -> None:
        """Checks of several fields together (none by default)."""


def build(cls: type, prefix: str, values: dict[str, Any]) -> Any:
    """`cls(**values)`, a refused field named under `prefix` (e.g. `dataset`)."""
    try:
        return cls(**values)
    except SettingError as error:
        raise error.within(prefix) from None


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
