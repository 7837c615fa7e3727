"""Several MS-SENet / TIM-Net streams as one network: the reference layers, grouped.

Fold stacking (ser/models/stacked.py) runs F folds' networks at once; with their two
reading directions that is G = 2F streams, group g = 2 * fold + direction. Every layer
of the reference becomes one operation over all groups, each group with its own weights
(gradients reach each network's own parameters, running statistics its own buffers).
Plain tensor operations only: any device, torch.compile, CUDA graphs. Layouts as in the
reference, with G * channels. How each layer is grouped: docs/performance.md, section
"The grouped reference layers".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ser.models.reference.fusion import SamePaddingAveragePool2d
from ser.models.reference.layers import BatchNorm
from ser.models.reference.masks import StreamMasks


def _cat(modules: Sequence[nn.Module], name: str) -> torch.Tensor | None:
    values = [getattr(module, name) for module in modules]
    return None if values[0] is None else torch.cat(values)


def stack_attribute(modules: Sequence[nn.Module], name: str) -> torch.Tensor | None:
    """The modules' tensors `name` stacked along a new first axis (None if they have none):
    inside the computation, so gradients reach each module's own parameter."""
    values = [getattr(module, name) for module in modules]
    if values[0] is None:
        return None
    return values[0].unsqueeze(0) if len(values) == 1 else torch.stack(values)


def _factors(masks: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The groups' dropout factors along the channel axis, or None without dropout."""
    return None if masks[0] is None else torch.cat(list(masks), dim=1)


def batch_norm(h: torch.Tensor, norms: Sequence[BatchNorm]) -> torch.Tensor:
    """The groups' BatchNorms on h (batch, G * C, ...), each as `nn.BatchNorm` computes and
    updates itself (its momentum, a number, is the same for all: see stacked.groupable)."""
    first = norms[0]
    tracked = first.running_mean is not None
    use_batch = first.training or not tracked
    running_mean = _cat(norms, "running_mean") if tracked else None
    running_var = _cat(norms, "running_var") if tracked else None
    update = first.training and tracked
    out = F.batch_norm(
        h, running_mean if update or not first.training else None,
        running_var if update or not first.training else None,
        _cat(norms, "weight"), _cat(norms, "bias"), use_batch, first.momentum, first.eps,
    )
    if update:  # batch_norm updated the concatenated copies: back into each norm's buffers
        with torch.no_grad():
            channels = first.num_features
            # torch._foreach_*: torch.optim's multi-tensor ops (no public list-wide update)
            torch._foreach_add_([norm.num_batches_tracked for norm in norms], 1)
            torch._foreach_copy_([norm.running_mean for norm in norms], running_mean.split(channels))
            torch._foreach_copy_([norm.running_var for norm in norms], running_var.split(channels))
    return out


def squeeze_excitation(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The groups' SqueezeExcitation on x (batch, G * C, ...): dense layers as batched products."""
    groups, batch = len(layers), x.shape[0]
    summary = x.mean(dim=tuple(range(2, x.ndim))).view(batch, groups, -1).transpose(0, 1)
    squeezes = [layer.squeeze for layer in layers]
    excites = [layer.excite for layer in layers]
    hidden = torch.baddbmm(
        stack_attribute(squeezes, "bias")[:, None], summary, stack_attribute(squeezes, "weight").transpose(1, 2)
    ).relu()
    scale = torch.sigmoid(
        torch.baddbmm(stack_attribute(excites, "bias")[:, None], hidden, stack_attribute(excites, "weight").transpose(1, 2))
    )  # (G, batch, C)
    return x * scale.transpose(0, 1).reshape(batch, -1, *([1] * (x.ndim - 2)))


def fusion(fusions: Sequence[nn.Module], image: torch.Tensor, masks: Sequence[StreamMasks] | None) -> torch.Tensor:
    """The groups' TimeFrequencyFusion on image (batch, G, frames, features): (batch, G,
    frames, (branches + 1) * features), the projected branches with the raw input appended."""
    groups = len(fusions)
    outputs = []
    for k, branches in enumerate(zip(*(f.branches for f in fusions), strict=True)):
        convs = [branch.conv for branch in branches]
        h = F.conv2d(image, _cat(convs, "weight"), _cat(convs, "bias"), padding=convs[0].padding, groups=groups)
        h = F.relu(batch_norm(h, [branch.norm for branch in branches]))
        factors = None if masks is None else _factors([m.branches[k] for m in masks])
        if factors is not None:
            h = h * factors
        elif isinstance(branches[0].regularizer, SamePaddingAveragePool2d):
            h = branches[0].regularizer(h)
        outputs.append(h)
    fused = torch.cat(outputs, dim=3)
    if fusions[0].squeeze_excitation is not None:
        fused = squeeze_excitation([f.squeeze_excitation for f in fusions], fused)
    projections = [f.projection for f in fusions]
    projected = F.relu(
        F.conv2d(fused, _cat(projections, "weight"), _cat(projections, "bias"), groups=groups)
    )
    return torch.cat([projected, image], dim=3)


def temporal_aware_blocks(
    blocks: Sequence[nn.Module], h: torch.Tensor, masks: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]] | None
) -> torch.Tensor:
    """The groups' TemporalAwareBlock on h (batch, G * C, frames)."""
    groups, first = len(blocks), blocks[0]
    gate = h
    for position in range(2):
        convs = [block.second_conv if position else block.first_conv for block in blocks]
        norms = [block.second_norm if position else block.first_norm for block in blocks]
        z = F.conv1d(
            F.pad(gate, (first.causal_padding, 0)), _cat(convs, "weight"), _cat(convs, "bias"),
            dilation=convs[0].dilation, groups=groups,
        )
        gate = F.relu(batch_norm(z, norms))
        factors = None if masks is None else _factors([m[position] for m in masks])
        if factors is not None:
            gate = gate * factors
    return h * torch.sigmoid(gate)


def level_means(
    streams: Sequence[nn.Module], inputs: torch.Tensor, masks: Sequence[StreamMasks] | None
) -> torch.Tensor:
    """Every TAB's time mean (levels, batch, G * filters) of the groups' DirectionalStreams
    on inputs (batch, G, frames, features), group g reading inputs[:, g]."""
    groups, batch, frames = len(streams), inputs.shape[0], inputs.shape[2]
    fusions = [stream.fusion for stream in streams]
    if fusions[0] is not None:
        inputs = fusion(fusions, inputs, masks)
    pointwise = [stream.pointwise for stream in streams]
    h = F.conv1d(
        inputs.transpose(2, 3).reshape(batch, -1, frames),
        _cat(pointwise, "weight"), _cat(pointwise, "bias"), groups=groups,
    )
    means = []
    for j, blocks in enumerate(zip(*(stream.blocks for stream in streams), strict=True)):
        h = temporal_aware_blocks(blocks, h, None if masks is None else [m.blocks[j] for m in masks])
        means.append(h.mean(dim=2))
    return torch.stack(means)


def fused_level_means(
    nets: Sequence[nn.Module], x: torch.Tensor, masks: Sequence[tuple[StreamMasks, StreamMasks]] | None
) -> torch.Tensor:
    """(F, batch, levels, filters): per fold, the sum of its forward stream's level means on
    x[f] and its backward stream's on x[f] reversed in time (what MSSENet.embed weights)."""
    folds, batch = x.shape[0], x.shape[1]
    streams = [stream for net in nets for stream in (net.forward_stream, net.backward_stream)]
    # (batch, F, 2, frames, features) -> (batch, G, frames, features), g = 2 * fold + direction
    inputs = torch.stack([x, torch.flip(x, dims=[2])], dim=2).transpose(0, 1)
    inputs = inputs.reshape(batch, 2 * folds, *x.shape[2:])
    flat_masks = None if masks is None else [m for pair in masks for m in pair]
    means = level_means(streams, inputs, flat_masks)  # (levels, batch, G * filters)
    levels = means.shape[0]
    return means.view(levels, batch, folds, 2, -1).sum(3).permute(2, 1, 0, 3)
