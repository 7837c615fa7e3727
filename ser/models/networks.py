"""MS-SENet and TIM-Net: bidirectional TAB chains fused per level, then classified."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ser.models.blocks import TemporalAwareBlock
from ser.models.fusion import DEFAULT_KERNEL_SIZES, fusion_implementation
from ser.models.initialisation import LevelWeighting, keras_initialise


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
    # then uses instead of the full level sequences (see ser/models/fast.py).
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


# Other computations of DirectionalStream (same parameter names), keyed like the fusion
# implementations; a name without an entry here uses DirectionalStream itself.
STREAM_IMPLEMENTATIONS: dict[str, type[DirectionalStream]] = {}


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
        fusion_class = fusion_implementation(implementation)
        stream_class = STREAM_IMPLEMENTATIONS.get(implementation, DirectionalStream)
        self.input_dim = input_dim
        self.implementation = implementation

        def stream() -> DirectionalStream:
            fusion = None
            if time_frequency_fusion:
                fusion = fusion_class(
                    input_dim=input_dim,
                    filters=filters,
                    kernel_sizes=kernel_sizes,
                    squeeze_excitation=squeeze_excitation,
                    se_reduction=se_reduction,
                    branch_regularizer=branch_regularizer,
                    branch_rate=branch_rate,
                )
            return stream_class(input_dim, filters, num_blocks, block_dropout, fusion)

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
