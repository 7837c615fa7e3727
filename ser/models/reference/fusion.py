"""MS-SENet's time-frequency fusion (TFF) block, as the paper's code computes it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ser.models.reference.blocks import SqueezeExcitation
from ser.models.reference.initialisation import keras_initialise

DEFAULT_KERNEL_SIZES: tuple[tuple[int, int], ...] = ((11, 1), (1, 9), (3, 3))
BRANCH_REGULARIZERS = ("spatial_dropout", "avgpool", "dropout", "none")


class SamePaddingAveragePool2d(nn.Module):
    """2x2 average pool, stride 1, Keras 'same': one pad row/column at the end of each axis.

    Keras averages only over real (non-padded) entries. `nn.AvgPool2d` pads symmetrically,
    so we pad one on both sides with count_include_pad=False and drop the first output
    row and column, leaving exactly the windows x[i:i+2, j:j+2].
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)[..., 1:, 1:]


def _branch_regularizer(name: str, rate: float) -> nn.Module:
    if name == "spatial_dropout":
        return nn.Dropout2d(rate)  # Keras SpatialDropout2D: drops whole channels
    if name == "avgpool":
        # The paper's commented-out code pools with stride 2; a halved map could not be
        # concatenated with the raw input later, so the shape is kept (stride 1).
        return SamePaddingAveragePool2d()
    if name == "dropout":
        return nn.Dropout(rate)
    if name == "none":
        return nn.Identity()
    raise ValueError(
        f"Unknown branch_regularizer {name!r}; expected one of {', '.join(BRANCH_REGULARIZERS)}"
    )


class FusionBranch(nn.Module):
    """One TFF branch: Conv2d(1 -> filters, 'same') -> BatchNorm -> ReLU -> regulariser."""

    def __init__(
        self, filters: int, kernel_size: tuple[int, int], regularizer: str, rate: float
    ) -> None:
        super().__init__()
        if any(k < 1 or k % 2 == 0 for k in kernel_size):
            raise ValueError(
                f"TFF kernel sizes must be positive and odd for symmetric 'same' padding, "
                f"got {kernel_size}"
            )
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.conv = nn.Conv2d(1, filters, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(filters)
        self.regularizer = _branch_regularizer(regularizer, rate)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.regularizer(F.relu(self.norm(self.conv(image))))


class TimeFrequencyFusion(nn.Module):
    """Reference TFF block: (batch, frames, F) -> (batch, frames, (branches + 1) * F).

    The input is a one-channel image (batch, 1, frames, F). Each kernel shape gives a
    branch; branch outputs are concatenated along the feature (MFCC) axis, optionally
    rescaled by squeeze-excitation, projected to one channel by a 1x1 conv + ReLU, and
    the raw input is appended. Its convs see past and future frames ('same' padding) and
    SE averages over all frames, so unlike the TAB chain this block is not causal.
    """

    def __init__(
        self,
        input_dim: int = 39,
        filters: int = 39,
        kernel_sizes: Sequence[Sequence[int]] = DEFAULT_KERNEL_SIZES,
        squeeze_excitation: bool = True,
        se_reduction: int = 1,
        branch_regularizer: str = "spatial_dropout",
        branch_rate: float = 0.2,
    ) -> None:
        super().__init__()
        kernels = [tuple(int(k) for k in kernel) for kernel in kernel_sizes]
        if not kernels or any(len(kernel) != 2 for kernel in kernels):
            raise ValueError(
                f"kernel_sizes must be a non-empty list of (time, feature) pairs, got {kernel_sizes}"
            )
        self.input_dim = input_dim
        self.output_dim = (len(kernels) + 1) * input_dim
        self.branches = nn.ModuleList(
            FusionBranch(filters, kernel, branch_regularizer, branch_rate) for kernel in kernels
        )
        self.squeeze_excitation = (
            SqueezeExcitation(filters, se_reduction) if squeeze_excitation else None
        )
        self.projection = nn.Conv2d(filters, 1, kernel_size=1)
        keras_initialise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.unsqueeze(1)
        fused = torch.cat([branch(image) for branch in self.branches], dim=3)
        if self.squeeze_excitation is not None:
            fused = self.squeeze_excitation(fused)
        projected = F.relu(self.projection(fused)).squeeze(1)
        return torch.cat([projected, x], dim=2)
