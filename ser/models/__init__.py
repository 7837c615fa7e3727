"""The networks: plain torch modules, no Lightning, Hydra or files.

`reference/` is the specification (the papers' code transcribed), `fast/` the same
function computed faster, `native/` its C kernels behind typed operators;
`implementations.py` names the two, `networks.py` assembles MS-SENet and TIM-Net from
either, and `registry.py` lists the networks a checkpoint may ask for.
"""

from ser.models.fast import FastDirectionalStream, FastTimeFrequencyFusion
from ser.models.implementations import IMPLEMENTATIONS, Implementation, implementation
from ser.models.networks import MSSENet, TIMNet
from ser.models.reference import (
    DirectionalStream,
    LevelWeighting,
    SamePaddingAveragePool2d,
    SqueezeExcitation,
    TemporalAwareBlock,
    TimeFrequencyFusion,
    keras_initialise,
)

__all__ = [
    "IMPLEMENTATIONS",
    "DirectionalStream",
    "FastDirectionalStream",
    "FastTimeFrequencyFusion",
    "Implementation",
    "LevelWeighting",
    "MSSENet",
    "SamePaddingAveragePool2d",
    "SqueezeExcitation",
    "TIMNet",
    "TemporalAwareBlock",
    "TimeFrequencyFusion",
    "implementation",
    "keras_initialise",
]
