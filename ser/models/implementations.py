"""How a network is computed: the one table of implementations, by name.

An implementation is a pair of module classes, the time-frequency fusion block and the
directional stream (pointwise conv and TAB chain), that `MSSENet` and `TIMNet` build their
two streams from (`model.net.implementation=...`). Every pair takes the reference's
constructor arguments and has its parameter names, so a state dict loads into any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ser.models.fast import FastDirectionalStream, FastTimeFrequencyFusion
from ser.models.reference import DirectionalStream, TimeFrequencyFusion


@dataclass(frozen=True)
class Implementation:
    """The module classes of one implementation."""

    fusion: type[nn.Module]
    stream: type[DirectionalStream]


IMPLEMENTATIONS: dict[str, Implementation] = {
    # the direct transcription of the papers' code, kept as the specification
    "reference": Implementation(TimeFrequencyFusion, DirectionalStream),
    # the same function recomputed in fewer, larger operations (ser/models/fast)
    "fast": Implementation(FastTimeFrequencyFusion, FastDirectionalStream),
}


def implementation(name: str) -> Implementation:
    """The implementation registered as `name`; a clear ValueError for unknown names."""
    try:
        return IMPLEMENTATIONS[name]
    except KeyError:
        known = ", ".join(sorted(IMPLEMENTATIONS))
        # `auto` is a setting of runs, resolved for their device before a network is built
        hint = " (auto is resolved by ser.training.implementation)" if name == "auto" else ""
        raise ValueError(f"Unknown implementation {name!r}; expected one of: {known}{hint}") from None
