"""The specification: MS-SENet's and TIM-Net's parts as the papers' code computes them.

A direct PyTorch transcription of the Keras reference (`blocks`: the Temporal-Aware Block
and squeeze-excitation; `fusion`: the time-frequency fusion block; `stream`: one reading
direction; `initialisation`: the Keras defaults). Every other implementation
(ser/models/fast) subclasses these modules, so parameter names and state dicts are the
same, and is tested against them.
"""

from ser.models.reference.blocks import SqueezeExcitation, TemporalAwareBlock
from ser.models.reference.fusion import (
    BRANCH_REGULARIZERS,
    DEFAULT_KERNEL_SIZES,
    FusionBranch,
    SamePaddingAveragePool2d,
    TimeFrequencyFusion,
)
from ser.models.reference.initialisation import LevelWeighting, keras_initialise
from ser.models.reference.stream import DirectionalStream

__all__ = [
    "BRANCH_REGULARIZERS",
    "DEFAULT_KERNEL_SIZES",
    "DirectionalStream",
    "FusionBranch",
    "LevelWeighting",
    "SamePaddingAveragePool2d",
    "SqueezeExcitation",
    "TemporalAwareBlock",
    "TimeFrequencyFusion",
    "keras_initialise",
]
