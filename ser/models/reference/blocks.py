"""Building blocks shared by MS-SENet and TIM-Net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ser.models.reference.initialisation import keras_initialise


class TemporalAwareBlock(nn.Module):
    """TIM-Net's Temporal-Aware Block on (batch, channels, frames).

    Two causal dilated convolutions, each followed by BatchNorm, ReLU and channel-wise
    (spatial) dropout; the result gates the input: x * sigmoid(h). Frames only see their
    past, so the block is causal.
    """

    def __init__(self, channels: int, dilation: int, dropout: float, kernel_size: int = 2) -> None:
        super().__init__()
        self.causal_padding = (kernel_size - 1) * dilation
        self.first_conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.first_norm = nn.BatchNorm1d(channels)
        self.second_conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.second_norm = nn.BatchNorm1d(channels)
        # Keras SpatialDropout1D on (batch, frames, channels) drops whole channels.
        self.channel_dropout = nn.Dropout1d(dropout)
        keras_initialise(self)

    def _causal_step(self, x: torch.Tensor, conv: nn.Conv1d, norm: nn.BatchNorm1d) -> torch.Tensor:
        h = conv(F.pad(x, (self.causal_padding, 0)))
        return self.channel_dropout(F.relu(norm(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._causal_step(x, self.first_conv, self.first_norm)
        h = self._causal_step(h, self.second_conv, self.second_norm)
        return x * torch.sigmoid(h)


class SqueezeExcitation(nn.Module):
    """Channel attention: mean over all non-channel dims, two dense layers, rescale.

    Works on (batch, channels, ...). `reduction=1` matches the MS-SENet code (39 -> 39).
    """

    def __init__(self, channels: int, reduction: int = 1) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(
                f"SqueezeExcitation reduction must be in [1, channels={channels}], got {reduction}"
            )
        self.squeeze = nn.Linear(channels, channels // reduction)
        self.excite = nn.Linear(channels // reduction, channels)
        keras_initialise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summary = x.mean(dim=tuple(range(2, x.ndim)))
        scale = torch.sigmoid(self.excite(F.relu(self.squeeze(summary))))
        return x * scale.reshape(*scale.shape, *([1] * (x.ndim - 2)))
