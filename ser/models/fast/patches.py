"""Patches of the fusion block's one-channel input image, and their moments.

Every branch conv of the time-frequency fusion block has one input channel, so
conv(x) = patches(x)^T @ W^T: one small GEMM per branch over patches of shape
(kh*kw + 1, frames*features) per sample (a row of ones carries the bias). BatchNorm's
batch statistics of that linear map follow from the patches' mean and covariance.

The rows of an input may be S segments of equal size (fold stacking: one per fold's batch),
each with its own shift and moments, since each is normalised by its own BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def patches(x: torch.Tensor, kernel: tuple[int, int], shift: torch.Tensor) -> torch.Tensor:
    """Shifted 'same' patches of the one-channel image x: (B, T, F) -> (B, kh*kw + 1, T*F).

    Row i*kw + j holds x[t + i - kh//2, f + j - kw//2] - shift (zero padding becomes
    -shift), the last row is ones; `shift` is a scalar or one value per sample (B, 1, 1).
    So a conv with weight w and bias b is [w, b + shift * sum(w)] @ patches, and the
    patches' second moments, taken about a value near their mean, lose no precision to
    cancellation. Differentiable in x (not in shift).
    """
    kh, kw = kernel
    batch, frames, features = x.shape
    ph, pw = kh // 2, kw // 2
    padded = x.new_empty(batch, frames + 2 * ph, features + 2 * pw)
    if ph or pw:
        padded.copy_(-shift.expand_as(padded))
    padded[:, ph : ph + frames, pw : pw + features] = x - shift
    width = features + 2 * pw
    windows = padded.as_strided(
        (batch, kh, kw, frames, features), (padded.stride(0), width, 1, width, 1)
    )
    k = kh * kw
    positions = frames * features
    if x.requires_grad:
        return torch.cat(
            [windows.reshape(batch, k, positions), x.new_ones(batch, 1, positions)], dim=1
        )
    out = x.new_empty(batch, k + 1, positions)
    out[:, :k].view(batch, kh, kw, frames, features).copy_(windows)
    out[:, k].fill_(1.0)
    return out


def patch_moments(p: torch.Tensor, segments: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (S, k+1) and covariance (S, k+1, k+1) of the patch columns over all positions
    of each of the S segments of samples.

    E[p p^T] - mean mean^T from one GEMM over the patches as they are (their last row of
    ones makes the last column of E[p p^T] the mean); they are shifted to near-zero mean
    (see `patches`), so the subtraction cancels few digits.
    """
    count = p.shape[0] // segments * p.shape[2]
    products = torch.bmm(p, p.transpose(1, 2))
    second = products.view(segments, -1, *products.shape[1:]).sum(1) / count
    mean = second[:, :, -1]
    return mean, second - mean[:, :, None] * mean[:, None, :]



class Patches:
    """One kernel shape's shifted patches of an input of S segments (see `patches`), each
    segment's shift (S,), and their moments computed once however many blocks read them."""

    def __init__(self, x: torch.Tensor, kernel: tuple[int, int], shift: torch.Tensor) -> None:
        self.shift = shift
        self.segments = shift.shape[0]
        per_sample = shift[:, None, None, None].expand(-1, x.shape[0] // self.segments, 1, 1)
        self.values = patches(x, kernel, per_sample.reshape(-1, 1, 1))
        self._moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._moments is None:
            self._moments = patch_moments(self.values, self.segments)
        return self._moments


def shared_patches(
    fusions: Sequence[nn.Module], x: torch.Tensor, segments: int = 1
) -> dict[tuple[int, int], Patches]:
    """The patches of x (B, T, F), S = `segments` groups of samples, for every kernel shape
    of the given (fast) fusion blocks; each segment shifted by its own mean."""
    shift = x.detach().reshape(segments, -1).mean(1)
    kernels = {branch.conv.kernel_size for fusion in fusions for branch in fusion.branches}
    return {kernel: Patches(x, kernel, shift) for kernel in sorted(kernels)}

