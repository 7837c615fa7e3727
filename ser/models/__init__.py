"""The networks: plain torch modules, no Lightning, Hydra or files."""

from ser.models.blocks import SqueezeExcitation, TemporalAwareBlock
from ser.models.fast import FastTimeFrequencyFusion
from ser.models.fusion import (
    FUSION_IMPLEMENTATIONS,
    SamePaddingAveragePool2d,
    TimeFrequencyFusion,
    fusion_implementation,
    register_fusion_implementation,
)
from ser.models.initialisation import LevelWeighting, keras_initialise
from ser.models.networks import DirectionalStream, MSSENet, TIMNet

__all__ = [
    "FUSION_IMPLEMENTATIONS",
    "DirectionalStream",
    "FastTimeFrequencyFusion",
    "LevelWeighting",
    "MSSENet",
    "SamePaddingAveragePool2d",
    "SqueezeExcitation",
    "TIMNet",
    "TemporalAwareBlock",
    "TimeFrequencyFusion",
    "fusion_implementation",
    "keras_initialise",
    "register_fusion_implementation",
]
