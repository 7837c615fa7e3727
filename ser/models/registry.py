"""The networks a checkpoint may ask for, by name, with the constructor arguments each takes.

A checkpoint names its network (``"mssenet"``, ``"timnet"``) and gives plain keyword
arguments; `build_network` checks every argument against the table below (known name,
plain type, range) before anything is constructed. Nothing read from a file is ever
resolved as a class path: the only class paths understood are the two that checkpoints
written before this registry carried (`LEGACY_TARGETS`), mapped to their names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ser.models.networks import MSSENet, TIMNet

# The metadata key that names the network; the other keys are its keyword arguments.
NAME_KEY = "name"
# What the training configs (conf/model/*.yaml) wrote as `_target_` into checkpoints.
LEGACY_TARGETS = {"ser.models.MSSENet": "mssenet", "ser.models.TIMNet": "timnet"}
TARGET_KEY = "_target_"


class NetworkSpecError(ValueError):
    """A network description that names no registered network or has a bad argument."""


@dataclass(frozen=True)
class Argument:
    """One constructor argument: its kind and, for numbers, the accepted closed range."""

    kind: str  # "int", "float", "bool", "str" or "kernel_sizes" (a list of [height, width])
    low: float | None = None
    high: float | None = None

    def check(self, name: str, value: Any) -> Any:
        """`value` converted to the plain type; NetworkSpecError saying what was expected."""
        if self.kind == "kernel_sizes":
            return _kernel_sizes(name, value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise NetworkSpecError(f"{name}={value!r}: expected true or false")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise NetworkSpecError(f"{name}={value!r}: expected a string")
            return value
        # bool is an int subclass in Python; a flag is never a count or a rate.
        numeric = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            what = "an integer" if self.kind == "int" else "a number"
            raise NetworkSpecError(f"{name}={value!r}: expected {what}")
        low = float("-inf") if self.low is None else self.low
        high = float("inf") if self.high is None else self.high
        if not low <= value <= high:  # also refuses NaN
            raise NetworkSpecError(f"{name}={value!r}: expected a value from {low:g} to {high:g}")
        return int(value) if self.kind == "int" else float(value)


# Sizes far beyond any configuration of these networks, so that a forged description
# cannot make construction itself take unbounded time (its weights are checked after).
_COUNT = Argument("int", 1, 4096)
_RATE = Argument("float", 0.0, 1.0)
_KERNEL_SIDE = 64

MSSENET_ARGUMENTS: dict[str, Argument] = {
    "num_classes": _COUNT,
    "input_dim": _COUNT,
    "filters": _COUNT,
    "kernel_sizes": Argument("kernel_sizes"),
    "squeeze_excitation": Argument("bool"),
    "se_reduction": _COUNT,
    "branch_regularizer": Argument("str"),
    "branch_rate": _RATE,
    "num_blocks": Argument("int", 1, 32),  # block j dilates by 2**j
    "block_dropout": _RATE,
    "time_frequency_fusion": Argument("bool"),
    "implementation": Argument("str"),
}
TIMNET_ARGUMENTS = {
    key: MSSENET_ARGUMENTS[key]
    for key in ("num_classes", "input_dim", "filters", "num_blocks", "block_dropout", "implementation")
}


@dataclass(frozen=True)
class Network:
    """A registered network class and the keyword arguments it may be given."""

    cls: type[nn.Module]
    arguments: Mapping[str, Argument]
    required: tuple[str, ...] = ("num_classes",)


NETWORKS: dict[str, Network] = {
    "mssenet": Network(MSSENet, MSSENET_ARGUMENTS),
    "timnet": Network(TIMNet, TIMNET_ARGUMENTS),
}


def _kernel_sizes(name: str, value: Any) -> list[list[int]]:
    expected = f"a list of [height, width] pairs of integers from 1 to {_KERNEL_SIDE}"
    if not isinstance(value, list | tuple) or not value:
        raise NetworkSpecError(f"{name}={value!r}: expected {expected}")
    sizes = []
    for pair in value:
        if (
            not isinstance(pair, list | tuple) or len(pair) != 2
            or not all(isinstance(side, int) and not isinstance(side, bool) for side in pair)
            or not all(1 <= side <= _KERNEL_SIDE for side in pair)
        ):
            raise NetworkSpecError(f"{name}={value!r}: expected {expected}")
        sizes.append([int(side) for side in pair])
    return sizes


def network_spec(description: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(registered name, checked keyword arguments) of a checkpoint's network description.

    `description` is ``{"name": "mssenet", **arguments}`` or, as written before the
    registry, ``{"_target_": "ser.models.MSSENet", **arguments}``. Anything else (another
    class path, an unknown or missing name, an unknown argument, a value that is not of
    the argument's plain type, any nested mapping) raises NetworkSpecError.
    """
    if not isinstance(description, Mapping):
        raise NetworkSpecError(f"expected a mapping of the network's name and arguments, got {description!r}")
    values = dict(description)
    if NAME_KEY in values and TARGET_KEY in values:
        raise NetworkSpecError(f"both {NAME_KEY!r} and {TARGET_KEY!r} given; expected one")
    if TARGET_KEY in values:
        target = values.pop(TARGET_KEY)
        if target not in LEGACY_TARGETS:
            raise NetworkSpecError(
                f"{TARGET_KEY} {target!r} is not one of this project's networks "
                f"({', '.join(sorted(LEGACY_TARGETS))}); class paths are never instantiated"
            )
        name = LEGACY_TARGETS[target]
    else:
        name = values.pop(NAME_KEY, None)
    if name not in NETWORKS:
        raise NetworkSpecError(f"network {name!r}: expected one of {', '.join(sorted(NETWORKS))}")
    network = NETWORKS[name]
    arguments = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = " (a nested _target_: never instantiated)" if TARGET_KEY in value else ""
            raise NetworkSpecError(f"{key}: a mapping{nested}; {name} takes plain values only")
        if key not in network.arguments:
            raise NetworkSpecError(
                f"{key!r} is not an argument of {name}; expected some of {', '.join(network.arguments)}"
            )
        arguments[key] = network.arguments[key].check(key, value)
    missing = [key for key in network.required if key not in arguments]
    if missing:
        raise NetworkSpecError(f"{name} needs {', '.join(missing)}")
    return name, arguments


def checkpoint_description(net_config: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint stores for a network configured as ``net_config``.

    A config naming one of the registered classes is stored as ``{"name": ..., **arguments}``;
    any other (a user's own class in a config) is kept as given, and is then refused by
    `network_spec` when the checkpoint is loaded for inference.
    """
    values = dict(net_config)
    target = values.get(TARGET_KEY)
    if target not in LEGACY_TARGETS:
        return values
    values.pop(TARGET_KEY)
    return {NAME_KEY: LEGACY_TARGETS[target], **values}


def expected_state_shapes(name: str, arguments: Mapping[str, Any]) -> dict[str, torch.Size]:
    """Shapes of the state dict `build_network(name, arguments)` would have.

    Built on the meta device: nothing is allocated, so the shapes can be compared with a
    checkpoint's weights before the network is built for real.
    """
    with torch.device("meta"):
        probe = NETWORKS[name].cls(**arguments)
    return {key: value.shape for key, value in probe.state_dict().items()}


def build_network(name: str, arguments: Mapping[str, Any]) -> nn.Module:
    """The registered network `name` built with `arguments` (as checked by `network_spec`)."""
    return NETWORKS[name].cls(**arguments)
