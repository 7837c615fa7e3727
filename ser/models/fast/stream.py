"""The fast directional stream: fusion, pointwise conv and TAB chain, several streams at once.

The TAB chain runs in (groups, batch, frames, channels) layout: a group is one stream with
its own (stacked) weights, so MS-SENet's two reading directions run as two groups of every
operation, which halves the number of (small) operations, and MSSENet.embed takes only the
per-level time means, never the stacked sequences (`bidirectional_level_means`). Each
block is one autograd Function: with the C kernels for float32 on the CPU (tab_native.py),
else its PyTorch formulation (tab.py). Dropout masks are drawn as the reference draws
them, so both implementations compute the same function with the same random numbers.
`chain` also runs several folds' networks as groups (fold stacking, grouped.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ser.models.fast.batchnorm import norm_group
from ser.models.fast.fusion import FastTimeFrequencyFusion, project, use_reference
from ser.models.fast.patches import Patches, shared_patches
from ser.models.fast.tab import TemporalAwareBlockFunction
from ser.models.fast.tab_native import NativeTemporalAwareBlockFunction
from ser.models.native import available
from ser.models.reference import DirectionalStream, TemporalAwareBlock
from ser.models.reference.grouped import stack_attribute
from ser.models.reference.masks import StreamMasks, draw_stream_masks


def _stack_masks(masks: Sequence[torch.Tensor | None], like: torch.Tensor):  # noqa: ANN202
    """(G, B, 1, C) from one channel-dropout mask (B, C, 1) (or None) per group; None when
    no group has one."""
    if all(m is None for m in masks):
        return None
    batch, channels = like.shape[1], like.shape[3]
    ones = like.new_ones(batch, 1, channels)
    return torch.stack([ones if m is None else m.view(batch, 1, channels) for m in masks])


def temporal_aware_blocks(
    blocks: Sequence[TemporalAwareBlock],
    x: torch.Tensor,
    masks: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One TAB per group applied to x (G, B, T, C), with the groups' dropout masks; returns
    the outputs (G, B, T, C) and their time means (G, B, C)."""
    for block in blocks:
        if block.first_conv.kernel_size != (2,) or block.second_conv.kernel_size != (2,):
            raise ValueError("the fast TAB computes kernel size 2 only")
    dilations = {block.first_conv.dilation[0] for block in blocks}
    if len(dilations) != 1:
        raise ValueError("grouped TABs need equal dilations")
    convs_a = [block.first_conv for block in blocks]
    convs_b = [block.second_conv for block in blocks]
    norms_a = [block.first_norm for block in blocks]
    norms_b = [block.second_norm for block in blocks]
    function = TemporalAwareBlockFunction
    if x.dtype == torch.float32 and x.device.type == "cpu" and available():
        function = NativeTemporalAwareBlockFunction
    return function.apply(
        x.contiguous(),
        stack_attribute(convs_a, "weight"),
        stack_attribute(convs_a, "bias"),
        stack_attribute(norms_a, "weight"),
        stack_attribute(norms_a, "bias"),
        stack_attribute(convs_b, "weight"),
        stack_attribute(convs_b, "bias"),
        stack_attribute(norms_b, "weight"),
        stack_attribute(norms_b, "bias"),
        dilations.pop(),
        (norm_group(norms_a), norm_group(norms_b)),
        (_stack_masks([m[0] for m in masks], x), _stack_masks([m[1] for m in masks], x)),
    )


def _pointwise(
    streams: Sequence[DirectionalStream],
    x: torch.Tensor,
    shared: dict[tuple[int, int], Patches] | None,
    reverse: bool,
    masks: Sequence[StreamMasks],
) -> torch.Tensor:
    """The streams' [fusion ->] pointwise conv on x (S * B, T, F), stream s reading the
    s-th of S equal segments of the samples, or on x reversed in time with `reverse`:
    (S, B, T, filters) in the streams' own time order.

    With the fast fusion, the conv reads the projected branches and the raw input as two
    GEMMs instead of their concatenation; `shared` passes patches of x computed once for
    several streams (see `project` in fusion.py), `masks` the streams' dropout masks."""
    segments = len(streams)
    batch, frames, features = x.shape
    weight = stack_attribute([s.pointwise for s in streams], "weight")[..., 0].transpose(1, 2)
    bias = stack_attribute([s.pointwise for s in streams], "bias")[:, None]
    fusions = [stream.fusion for stream in streams]
    if isinstance(fusions[0], FastTimeFrequencyFusion):
        projected = project(fusions, x, shared, reverse, [m.branches for m in masks])
        if reverse:
            x = torch.flip(x, dims=[1])
        width = projected.shape[2]
        h = torch.baddbmm(bias, projected.view(segments, -1, width), weight[:, :width])
        h = h.baddbmm_(x.view(segments, -1, features), weight[:, width:])
    else:
        if reverse:
            x = torch.flip(x, dims=[1])
        if fusions[0] is not None:  # another implementation's block draws its own masks
            x = torch.cat([f(part) for f, part in zip(fusions, x.chunk(segments), strict=True)])
        h = torch.baddbmm(bias, x.reshape(segments, -1, x.shape[2]), weight)
    return h.view(segments, batch // segments, frames, -1)


def chain(
    x: torch.Tensor,
    streams: Sequence[Sequence[DirectionalStream]],
    masks: Sequence[Sequence[StreamMasks]],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Fusion, pointwise conv and TABs of the streams, run as groups: streams[d][s] reads
    x[s] (x: (S, B, T, F)), in time order for d = 0 and reversed for d = 1, with
    masks[d][s]. Returns per TAB level the outputs (G, B, T, C) and their time means
    (G, B, C), group g = d * S + s. The fast fusion blocks share x's patches and run as
    one computation per direction."""
    segments = x.shape[0]
    rows = x.reshape(-1, *x.shape[2:])
    fusions = [s.fusion for own in streams for s in own if isinstance(s.fusion, FastTimeFrequencyFusion)]
    shared = shared_patches(fusions, rows, segments) if fusions else None
    starts = [
        _pointwise(own, rows, shared, direction == 1, own_masks)
        for direction, (own, own_masks) in enumerate(zip(streams, masks, strict=True))
    ]
    del shared
    h = torch.cat(starts) if len(starts) > 1 else starts[0]
    flat = [stream for own in streams for stream in own]
    flat_masks = [m for own in masks for m in own]
    levels, means = [], []
    for j, blocks in enumerate(zip(*(stream.blocks for stream in flat), strict=True)):
        h, mean = temporal_aware_blocks(blocks, h, [m.blocks[j] for m in flat_masks])
        levels.append(h)
        means.append(mean)
    return levels, means


class FastDirectionalStream(DirectionalStream):
    """DirectionalStream computed in (batch, frames, channels) layout with fused TABs.

    Same parameters and output as the reference: (batch, num_blocks, filters, frames), here
    a transposed view of a (batch, num_blocks, frames, filters) tensor. For MSSENet.embed it
    also computes both reading directions at once (`bidirectional_level_means`). Its
    dropout masks are drawn first, in the reference's order (ser/models/reference/masks.py).
    """

    @property
    def summarises_levels(self) -> bool:  # type: ignore[override]
        return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())

    def bidirectional_level_means(
        self, other: DirectionalStream, x: torch.Tensor
    ) -> torch.Tensor:
        """Sum of this stream's level means on x and `other`'s on x reversed in time:
        (batch, num_blocks, filters), both streams computed as two groups."""
        if use_reference(x):
            return self(x).mean(dim=3) + other(torch.flip(x, dims=[1])).mean(dim=3)
        batch, frames = x.shape[0], x.shape[1]
        masks = [[draw_stream_masks(s, batch, frames, x)] for s in (self, other)]
        _, means = chain(x[None], [[self], [other]], masks)
        return torch.stack([mean.sum(0) for mean in means], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_reference(x):
            return super().forward(x)
        masks = draw_stream_masks(self, x.shape[0], x.shape[1], x)
        levels, _ = chain(x[None], [[self]], [[masks]])
        return torch.stack([level[0] for level in levels], dim=1).transpose(2, 3)
