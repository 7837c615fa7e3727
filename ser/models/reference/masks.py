"""A stream's dropout masks drawn before it computes, as its forward pass would draw them.

The reference draws its masks while it computes: per reading direction, the TFF branches'
regularisers in branch order, then each TAB's two channel dropouts. Nothing else in a
stream draws random numbers, so drawing all masks first, in that order, with the draws
the dropout modules make for the shapes they see, gives the same masks: the
fast implementation and fold stacking (several folds' masks, each from its own seed)
compute with masks drawn here. A mask is the factor the dropout multiplies by (0 or
1 / (1 - p)), or None where the dropout draws nothing (eval mode, p = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ser.models.reference.layers import DROPOUTS


@dataclass
class StreamMasks:
    """The dropout factors of one reading direction."""

    # per TFF branch: (B, C, 1, 1) spatial or (B, C, frames, features) elementwise, or None
    branches: list[torch.Tensor | None]
    # per TAB: its two channel dropouts' factors, (B, C, 1) each, or None
    blocks: list[tuple[torch.Tensor | None, torch.Tensor | None]]


def _factors(dropout: nn.Module, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
    """The factors `dropout` multiplies an input of `shape` by, drawn as it draws them."""
    if not isinstance(dropout, DROPOUTS):
        return None
    p = dropout.p
    if not dropout.training or p == 0:
        return None  # no draw
    if isinstance(dropout, nn.Dropout):
        # elementwise: the module itself on ones (on CUDA a fused kernel with its own draw)
        return dropout(like.new_ones(shape))
    if p == 1:
        return like.new_zeros(shape)  # no draw
    # channel (feature) dropout: ATen's own draw, one Bernoulli factor per (sample, channel)
    return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)


def draw_fusion_masks(fusion: nn.Module, batch: int, frames: int, like: torch.Tensor) -> list[torch.Tensor | None]:
    """The masks of a TimeFrequencyFusion's branches, in branch order."""
    masks = []
    for branch in fusion.branches:
        channels = branch.conv.out_channels
        regularizer = branch.regularizer
        # spatial dropout draws per (sample, channel), plain dropout per element
        spatial = isinstance(regularizer, nn.Dropout2d)
        shape = (batch, channels, 1, 1) if spatial else (batch, channels, frames, fusion.input_dim)
        masks.append(_factors(regularizer, shape, like))
    return masks


def draw_stream_masks(stream: nn.Module, batch: int, frames: int, like: torch.Tensor) -> StreamMasks:
    """The masks of `stream` (a DirectionalStream) for a batch of `batch` x `frames`, drawn
    from torch's current generator in the reference's order; `like` gives dtype and device."""
    branches: list[torch.Tensor | None] = []
    if stream.fusion is not None:
        branches = draw_fusion_masks(stream.fusion, batch, frames, like)
    blocks = []
    for block in stream.blocks:
        shape = (batch, block.first_conv.out_channels, 1)
        first = _factors(block.channel_dropout, shape, like)
        blocks.append((first, _factors(block.channel_dropout, shape, like)))
    return StreamMasks(branches, blocks)


def draw_network_masks(net: nn.Module, batch: int, frames: int, like: torch.Tensor) -> tuple[StreamMasks, StreamMasks]:
    """The masks of an MSSENet/TIMNet's forward and backward streams, in that order."""
    return (
        draw_stream_masks(net.forward_stream, batch, frames, like),
        draw_stream_masks(net.backward_stream, batch, frames, like),
    )


def seed_generator(seed: int, device: torch.device | None) -> None:
    """Seed the generator that draws on `device` as `torch.manual_seed` would (None: every
    generator, as it does). On the CPU only the CPU's: torch.manual_seed also queues a
    seeding of every accelerator kind, each recording a traceback, a cost per fold and
    batch that a CPU run never uses."""
    if device is not None and device.type == "cpu":
        torch.default_generator.manual_seed(int(seed))
    else:
        torch.manual_seed(int(seed))
