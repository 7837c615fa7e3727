"""The fast time-frequency fusion block: the reference's function, parameters and state dict.

Each branch conv has one input channel, so it is a GEMM over the input's patches
(patches.py); BatchNorm's batch statistics follow from the patches' moments and fold into
the conv weights; spatial dropout, SE and the 1x1 projection fold into per-(sample,
channel) weights of one channel contraction (`FusedBranches`, which never materialises
the ReLU output or its gradient). MS-SENet's backward stream shares the forward stream's
patches (`shared_patches`, `projected(..., reverse=True)`). `project`: several blocks
(folds) as one call. The derivations, and the C kernels' part: docs/performance.md,
section "The fast fusion block".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ser.models.fast.batchnorm import update_running_stats
from ser.models.fast.branches import BranchConstants, FusedConfig, per_sample, reversed_branch
from ser.models.fast.fused_branches import FusedBranches
from ser.models.fast.patches import Patches, shared_patches
from ser.models.reference.fusion import (
    FusionBranch,
    SamePaddingAveragePool2d,
    TimeFrequencyFusion,
)
from ser.models.reference.grouped import stack_attribute
from ser.models.reference.masks import draw_fusion_masks

# Samples per chunk of `FusedBranches`: three branches of (chunk, 188 * 39, 39) float32
# activations stay ~14 MB, so they are reduced while still in cache (2 to 4 measured best
# on 2 cores; 1 pays too much per-operation overhead, 8 spills the cache).
DEFAULT_CHUNK = 4


def use_reference(x: torch.Tensor) -> bool:
    """Whether to run the reference computation instead: when tracing or exporting (the
    exporters cannot record Python autograd Functions, and the reference graph has no
    batch-size dependent chunking), and on the meta device (shape and FLOP analysis,
    which should see the network's own convolutions)."""
    return (
        x.is_meta
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )


class FastTimeFrequencyFusion(TimeFrequencyFusion):
    """The reference TFF block's function, computed by `FusedBranches` (see the module docstring)."""

    def __init__(self, *args: Any, chunk: int = DEFAULT_CHUNK, **kwargs: Any) -> None:
        # The reference's constructor arguments, so configs and state dicts carry over.
        super().__init__(*args, **kwargs)
        self.chunk = chunk
        self._squeeze_weight_cache: dict[tuple, torch.Tensor] = {}

    def _branch_constants(
        self, branch: FusionBranch, mask: torch.Tensor | None, frames: int, like: torch.Tensor
    ) -> BranchConstants:
        """The branch's regulariser as constants of `FusedBranches`, with its dropout
        factors `mask` drawn beforehand (ser/models/reference/masks.py)."""
        reg = branch.regularizer
        channel_mask = element_mask = squeeze_weights = None
        element_scale = 1.0
        if isinstance(reg, nn.Dropout2d):
            if mask is not None:
                channel_mask = mask.view(mask.shape[0], mask.shape[1])
        elif isinstance(reg, nn.Dropout):
            if mask is not None:
                # one byte per element instead of four; the factor is applied as a scalar
                element_mask = mask.flatten(2) != 0
                element_scale = 1.0 / (1 - reg.p) if reg.p < 1 else 1.0
        elif isinstance(reg, SamePaddingAveragePool2d):
            squeeze_weights = self._pool_squeeze_weights(frames, self.input_dim, like.device, like.dtype)
        elif not isinstance(reg, nn.Identity):
            raise TypeError(f"fast TFF cannot compute regulariser {type(reg).__name__}")
        return BranchConstants(channel_mask, element_mask, element_scale, squeeze_weights)

    def _pool_squeeze_weights(self, frames: int, features: int, device, dtype) -> torch.Tensor:  # noqa: ANN001
        """q with sum(pool(r)) = sum(q * r): each position's total weight in the pooled map.

        Pooled (i, j) averages the r x c real entries of x[i:i+2, j:j+2] (r = 1 on the last
        row, else 2; likewise c), so q factorises into a frame and a feature profile."""
        key = (frames, features, str(device), dtype)
        cached = self._squeeze_weight_cache.get(key)
        if cached is None:

            def profile(n: int) -> torch.Tensor:
                inverse = torch.full((n,), 0.5, device=device, dtype=dtype)
                inverse[-1] = 1.0  # the last window holds one real entry along this axis
                total = inverse.clone()
                total[1:] += inverse[:-1]  # position t is in windows t - 1 and t
                return total

            cached = torch.outer(profile(frames), profile(features)).flatten()
            self._squeeze_weight_cache[key] = cached
        return cached

    def projected(
        self,
        x: torch.Tensor,
        shared: dict[tuple[int, int], Patches] | None = None,
        reverse: bool = False,
        masks: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The fusion output without the appended input: (batch, frames, branches * F);
        see `project`, here for this block alone."""
        return project([self], x, shared, reverse, None if masks is None else [masks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_reference(x):
            return super().forward(x)
        return torch.cat([self.projected(x), x], 2)


def folded_weights(branches: Sequence[FusionBranch], patch: Patches, reverse: bool) -> torch.Tensor:
    """[W', b'] (S, C, k+1): each segment's branch conv followed by its BatchNorm as one
    linear map of the segment's patches.

    With `reverse` the patches are those of the input reversed in time, and the kernel
    is flipped in time to match (see `project`)."""
    convs, norms = [b.conv for b in branches], [b.norm for b in branches]
    norm = norms[0]
    kernel = stack_attribute(convs, "weight")  # (S, C, 1, kh, kw)
    kernel = (kernel.flip(3) if reverse else kernel).flatten(2)
    # the patches are shifted by each segment's `shift`
    bias = stack_attribute(convs, "bias") + patch.shift[:, None] * kernel.sum(2)
    weight = torch.cat([kernel, bias[:, :, None]], dim=2)  # (S, C, k+1)
    if norm.training or norm.running_mean is None:  # batch statistics, as BatchNorm
        mean_p, covariance = patch.moments()
        mean = torch.bmm(weight, mean_p[:, :, None])[:, :, 0]
        var = (torch.bmm(weight, covariance) * weight).sum(2)
        if norm.training and norm.track_running_stats and norm.running_mean is not None:
            count = patch.values.shape[0] // patch.segments * patch.values.shape[2]
            update_running_stats(norms, mean.detach(), var.detach(), count)
    else:
        mean, var = stack_attribute(norms, "running_mean"), stack_attribute(norms, "running_var")
    inv_std = torch.rsqrt(var + norm.eps)
    gain = inv_std if norm.weight is None else stack_attribute(norms, "weight") * inv_std
    shift = -mean * gain if norm.bias is None else stack_attribute(norms, "bias") - mean * gain
    folded = weight * gain[:, :, None]
    # The bias column: b * gain + shift (the ones row of the patches multiplies it).
    return torch.cat([folded[:, :, :-1], (folded[:, :, -1] + shift)[:, :, None]], dim=2)


def _rows(masks: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The segments' masks of one branch as one tensor of all samples."""
    return masks[0] if masks[0] is None or len(masks) == 1 else torch.cat(list(masks))


def project(
    fusions: Sequence[FastTimeFrequencyFusion],
    x: torch.Tensor,
    shared: dict[tuple[int, int], Patches] | None,
    reverse: bool,
    masks: Sequence[Sequence[torch.Tensor | None]] | None,
) -> torch.Tensor:
    """The fusion outputs without the appended input, (batch, frames, branches * F), of S
    blocks of one architecture on x (batch, frames, F): block s reads the s-th of S equal
    segments of the samples (S = 1: one block on all). One `FusedBranches` call for all.

    `masks[s]`: block s's branch dropout factors drawn beforehand (as `draw_fusion_masks`
    draws them, in the stream's own time order); None draws them here. `shared` holds
    the patches of x by kernel shape (`shared_patches`), for blocks that read the same
    input. With `reverse`, the result is that of x reversed in time, computed from x's own
    patches (why that holds: docs/performance.md, section "The fast fusion block").
    """
    first, segments = fusions[0], len(fusions)
    batch, frames, features = x.shape
    if shared is None:
        shared = shared_patches(fusions, x, segments)
    ps = [shared[branch.conv.kernel_size] for branch in first.branches]
    ws = [
        folded_weights([f.branches[k] for f in fusions], patch, reverse)
        for k, patch in enumerate(ps)
    ]
    if masks is None:
        masks = [draw_fusion_masks(f, batch // segments, frames, x) for f in fusions]
    consts = [
        first._branch_constants(branch, _rows([m[k] for m in masks]), frames, x)
        for k, branch in enumerate(first.branches)
    ]
    if reverse:
        consts = [reversed_branch(c, frames) for c in consts]
    se = [f.squeeze_excitation for f in fusions] if first.squeeze_excitation is not None else None
    config = FusedConfig(
        branches=consts,
        squeeze_excitation=se is not None,
        squeeze_denominator=float(frames * features * len(first.branches)),
        chunk=first.chunk,
        features=features,
        reverse=reverse,
        segments=segments,
    )
    squeezes = [None] * 4 if se is None else [
        stack_attribute([layer.squeeze for layer in se], "weight"),
        stack_attribute([layer.squeeze for layer in se], "bias"),
        stack_attribute([layer.excite for layer in se], "weight"),
        stack_attribute([layer.excite for layer in se], "bias"),
    ]
    projections = [f.projection for f in fusions]
    out = FusedBranches.apply(
        config,
        stack_attribute(projections, "weight").flatten(1),
        *squeezes,
        *(patch.values for patch in ps),
        *ws,
    )  # (B, T, nb, F), in the stream's own time order
    if consts[0].squeeze_weights is not None:  # avgpool: pool each branch's map
        out = SamePaddingAveragePool2d()(out.transpose(1, 2)).transpose(1, 2)
    bias = per_sample(stack_attribute(projections, "bias"), batch)  # (B, 1)
    return (out + bias[:, :, None, None]).relu_().reshape(batch, frames, -1)
