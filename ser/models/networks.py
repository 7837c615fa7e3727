"""MS-SENet and TIM-Net: bidirectional TAB chains fused per level, then classified.

Both are assembled from the parts of one implementation (`implementation="fast"` or
`"reference"`, ser/models/implementations.py); the result is the same function with the
same parameters either way."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ser.models.implementations import implementation as find_implementation
from ser.models.reference import (
    DEFAULT_KERNEL_SIZES,
    DirectionalStream,
    LevelWeighting,
    keras_initialise,
)


class MSSENet(nn.Module):
    """MS-SENet (ICASSP 2024): TFF + squeeze-excitation in front of bidirectional TIM-Net.

    `forward(x)`: (batch, frames, input_dim) -> logits (batch, num_classes), no softmax.
    With `time_frequency_fusion=False` the network is TIM-Net.
    """

    def __init__(
        self,
        num_classes: int,
        input_dim: int = 39,
        filters: int = 39,
        kernel_sizes: Sequence[Sequence[int]] = DEFAULT_KERNEL_SIZES,
        squeeze_excitation: bool = True,
        se_reduction: int = 1,
        branch_regularizer: str = "spatial_dropout",
        branch_rate: float = 0.2,
        num_blocks: int = 10,
        block_dropout: float = 0.1,
        time_frequency_fusion: bool = True,
        implementation: str = "reference",
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        classes = find_implementation(implementation)
        self.input_dim = input_dim
        self.implementation = implementation

        def stream() -> DirectionalStream:
            fusion = None
            if time_frequency_fusion:
                fusion = classes.fusion(
                    input_dim=input_dim,
                    filters=filters,
                    kernel_sizes=kernel_sizes,
                    squeeze_excitation=squeeze_excitation,
                    se_reduction=se_reduction,
                    branch_regularizer=branch_regularizer,
                    branch_rate=branch_rate,
                )
            return classes.stream(input_dim, filters, num_blocks, block_dropout, fusion)

        # Separate weights per direction; the backward one reads the input reversed in time.
        self.forward_stream = stream()
        self.backward_stream = stream()
        self.level_weighting = LevelWeighting(num_blocks)
        self.classifier = nn.Linear(filters, num_classes)
        keras_initialise(self)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[2] != self.input_dim:
            raise ValueError(
                f"expected input of shape (batch, frames, {self.input_dim}), got {tuple(x.shape)}"
            )

    def level_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level TAB sequences of both directions, each (batch, levels, filters, frames).

        The backward sequences stay in reversed time (index i is original frame T-1-i):
        the reference does not re-reverse them, and the later time mean ignores order.
        """
        self._check_input(x)
        return self.forward_stream(x), self.backward_stream(torch.flip(x, dims=[1]))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The weighted fused vector z (batch, filters) that the classifier reads."""
        if self.forward_stream.summarises_levels:
            # mean(forward + backward) = mean(forward) + mean(backward), without the sequences
            self._check_input(x)
            fused_levels = self.forward_stream.bidirectional_level_means(self.backward_stream, x)
        else:
            forward_levels, backward_levels = self.level_outputs(x)
            fused_levels = (forward_levels + backward_levels).mean(dim=3)  # (batch, levels, filters)
        return self.level_weighting(fused_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class TIMNet(MSSENet):
    """TIM-Net (ICASSP 2023): MS-SENet without the time-frequency fusion block.

    `implementation` selects how the TAB chain is computed where an implementation of
    the stream is registered (e.g. "fast"); the fusion block does not exist here.
    """

    def __init__(
        self,
        num_classes: int,
        input_dim: int = 39,
        filters: int = 39,
        num_blocks: int = 8,
        block_dropout: float = 0.1,
        implementation: str = "reference",
    ) -> None:
        super().__init__(
            num_classes,
            input_dim=input_dim,
            filters=filters,
            num_blocks=num_blocks,
            block_dropout=block_dropout,
            time_frequency_fusion=False,
            implementation=implementation,
        )
