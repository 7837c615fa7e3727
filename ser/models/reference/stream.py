"""One reading direction of MS-SENet / TIM-Net, as the paper's code computes it."""

from __future__ import annotations

import torch
from torch import nn

from ser.models.reference.blocks import TemporalAwareBlock
from ser.models.reference.initialisation import keras_initialise


class DirectionalStream(nn.Module):
    """One reading direction: [TFF] -> pointwise Conv1d -> chain of TABs.

    Takes (batch, frames, input_dim) and returns every TAB's output stacked as
    (batch, num_blocks, filters, frames). Block j has dilation 2**j.
    """

    def __init__(
        self,
        input_dim: int,
        filters: int,
        num_blocks: int,
        block_dropout: float,
        fusion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.fusion = fusion
        pointwise_in = fusion.output_dim if fusion is not None else input_dim
        self.pointwise = nn.Conv1d(pointwise_in, filters, kernel_size=1)
        self.blocks = nn.ModuleList(
            TemporalAwareBlock(filters, 2**j, block_dropout) for j in range(num_blocks)
        )
        keras_initialise(self)

    # True where the class provides `bidirectional_level_means(other, x)`: the sum of this
    # stream's per-level time means on x and `other`'s on x reversed, which MSSENet.embed
    # then uses instead of the full level sequences (see ser/models/fast/stream.py).
    summarises_levels = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fusion is not None:
            x = self.fusion(x)
        h = self.pointwise(x.transpose(1, 2))
        levels = []
        for block in self.blocks:
            h = block(h)
            levels.append(h)
        return torch.stack(levels, dim=1)
