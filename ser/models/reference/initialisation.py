"""Keras-matching defaults, stated explicitly so the port trains like the reference."""

from __future__ import annotations

import torch
from torch import nn

from ser.models.reference.layers import BATCH_NORMS

# Keras BatchNormalization(momentum=0.99, epsilon=1e-3): Keras keeps 0.99 of the old
# moving average, PyTorch's momentum is the weight of the new batch, so 1 - 0.99.
BATCH_NORM_MOMENTUM = 0.01
BATCH_NORM_EPS = 1e-3
# Keras `initializer='uniform'` is RandomUniform(-0.05, 0.05).
LEVEL_WEIGHT_BOUND = 0.05


class LevelWeighting(nn.Module):
    """Learned weighted sum over levels: (batch, levels, channels) -> (batch, channels).

    One free weight per level, no softmax, as in the reference `WeightLayer`.
    """

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_levels))
        keras_initialise(self)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        return torch.einsum("blc,l->bc", levels, self.weight)


def keras_initialise(module: nn.Module) -> nn.Module:
    """Give every layer inside `module` the Keras defaults of the reference code.

    Conv and Linear: glorot-uniform weights (PyTorch's fan computation for convs equals
    Keras's), zero biases. BatchNorm: momentum 0.01, eps 1e-3, fresh affine and stats.
    `LevelWeighting`: uniform(-0.05, 0.05). Returns `module` for chaining.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, BATCH_NORMS):
            layer.momentum = BATCH_NORM_MOMENTUM
            layer.eps = BATCH_NORM_EPS
            layer.reset_parameters()
        elif isinstance(layer, LevelWeighting):
            nn.init.uniform_(layer.weight, -LEVEL_WEIGHT_BOUND, LEVEL_WEIGHT_BOUND)
    return module
