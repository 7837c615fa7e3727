"""The fused branches' constants and their PyTorch formulation, a chunk of samples at a time.

Per branch b the fusion block computes act = relu(P_b^T W'_b^T) [* dropout] (rows, T*F, C)
from the patches P_b and the folded weights W'_b (conv and BatchNorm as one linear map).
`FusedBranches` (fused_branches.py) reduces these activations while they are in cache;
this module holds what it needs besides the C kernels (branches_native.py): the
per-branch constants, SE's small forward, and the activations, slopes and slope products
computed with PyTorch operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BranchConstants:
    """Per-branch constants of one fused call (none of them differentiable)."""

    channel_mask: torch.Tensor | None  # (B, C): spatial dropout factors, 0 or 1/(1-p)
    element_mask: torch.Tensor | None  # (B, C, T*F) bool: elementwise dropout keep mask
    element_scale: float  # 1/(1-p) for the elementwise mask
    squeeze_weights: torch.Tensor | None  # (T*F,): weight of each position in SE's mean


@dataclass
class FusedConfig:
    """The settings of one `FusedBranches` call: S fusion blocks (one per segment of
    equal numbers of samples; S = 1 for one network) on their inputs."""

    branches: list[BranchConstants]
    squeeze_excitation: bool
    squeeze_denominator: float  # frames * branches * features
    chunk: int
    features: int
    reverse: bool = False  # the output in reversed time order (see `projected`)
    segments: int = 1

    def chunks(self, batch: int) -> list[tuple[int, slice]]:
        """(segment, rows) of each chunk of samples: at most `chunk` rows, in one segment."""
        size = batch // self.segments
        return [
            (segment, slice(start, min(start + self.chunk, (segment + 1) * size)))
            for segment in range(self.segments)
            for start in range(segment * size, (segment + 1) * size, self.chunk)
        ]


def per_sample(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-segment values (S, ...) repeated for each of the segment's samples: (batch, ...)."""
    if values.shape[0] == 1:
        return values.expand(batch, *values.shape[1:])
    return values.repeat_interleave(batch // values.shape[0], dim=0)


def se_forward(
    s: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Squeeze-excitation on the squeezed means s (B, C), the parameters of one block
    (w1 (C', C), ...) or of one per segment of samples (w1 (S, C', C), ...): its
    pre-activation, hidden layer and channel scale, each (B, .)."""
    if w1.dim() == 2:
        pre = torch.addmm(b1, s, w1.t())
        hidden = pre.clamp_min(0)
        return pre, hidden, torch.sigmoid(torch.addmm(b2, hidden, w2.t()))
    segments, batch = w1.shape[0], s.shape[0]
    s3 = s.view(segments, batch // segments, -1)
    pre = torch.baddbmm(b1[:, None], s3, w1.transpose(1, 2))
    hidden = pre.clamp_min(0)
    scale = torch.sigmoid(torch.baddbmm(b2[:, None], hidden, w2.transpose(1, 2)))
    return pre.view(batch, -1), hidden.view(batch, -1), scale.view(batch, -1)


def se_backward(grad_scale, s, pre, hidden, scale, w1, w2):  # noqa: ANN001, ANN201
    """Gradients of the per-segment SE parameters (S, ...) and of s (B, C), given
    d loss / d scale and `se_forward`'s results."""
    segments, batch = w1.shape[0], s.shape[0]

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(segments, batch // segments, -1)

    grad_logit = split(grad_scale * scale * (1 - scale))
    grad_w2 = torch.bmm(grad_logit.transpose(1, 2), split(hidden))
    grad_pre = torch.bmm(grad_logit, w2) * split(pre > 0)
    grad_w1 = torch.bmm(grad_pre.transpose(1, 2), split(s))
    grad_s = torch.bmm(grad_pre, w1).view(batch, -1)
    return grad_w1, grad_pre.sum(1), grad_w2, grad_logit.sum(1), grad_s


def channel_masks(config: FusedConfig, like: torch.Tensor) -> torch.Tensor | None:
    """(B, nb, C) spatial-dropout factors of all branches, or None without any."""
    if all(b.channel_mask is None for b in config.branches):
        return None
    return torch.stack(
        [
            b.channel_mask if b.channel_mask is not None else like.new_ones(like.shape)
            for b in config.branches
        ],
        dim=1,
    )


def reversed_branch(branch: BranchConstants, frames: int) -> BranchConstants:
    """A branch's per-position constants for the input reversed in time."""

    def flip(values: torch.Tensor | None) -> torch.Tensor | None:
        if values is None:
            return None
        shaped = values.reshape(*values.shape[:-1], frames, -1)
        return shaped.flip(-2).reshape(values.shape)

    return BranchConstants(
        branch.channel_mask, flip(branch.element_mask), branch.element_scale,
        flip(branch.squeeze_weights),
    )



def _linear(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The folded conv p^T @ w^T: (rows, T*F, C), channels last, w (C, k+1) or one per
    sample (rows, C, k+1) (the gradient GEMM
    [g * P; P] @ slope measured 1.5x faster on this layout than on channels first)."""
    if w.dim() == 3:  # one weight per sample
        return torch.bmm(p.transpose(1, 2), w.transpose(1, 2))
    return torch.bmm(p.transpose(1, 2), w.t().expand(p.shape[0], -1, -1))


def activation(p: torch.Tensor, w: torch.Tensor, branch: BranchConstants, sl: slice) -> torch.Tensor:
    """relu(p^T @ w^T) (with elementwise dropout applied), channels last: (rows, T*F, C)."""
    h = _linear(p, w).relu_()
    if branch.element_mask is not None:
        h.mul_(branch.element_mask[sl].transpose(1, 2)).mul_(branch.element_scale)
    return h


def _slope(p: torch.Tensor, w: torch.Tensor, branch: BranchConstants, sl: slice) -> torch.Tensor:
    """d act / d h: relu'(h) [* dropout factor], (rows, T*F, C)."""
    slope = _linear(p, w).gt_(0)  # in place, still float: 1 where relu passes
    if branch.element_mask is not None:
        slope.mul_(branch.element_mask[sl].transpose(1, 2)).mul_(branch.element_scale)
    return slope


def slope_products(
    p: torch.Tensor,
    w: torch.Tensor,
    branch: BranchConstants,
    g: torch.Tensor,
    sl: slice,
    first: torch.Tensor,
    second: torch.Tensor | None,
) -> None:
    """first = (g * P) @ slope and second = (q * P) @ slope, written in place (rows, k+1, C)."""
    slope = _slope(p, w, branch, sl)
    rows, k1 = p.shape[0], p.shape[1]
    right = p.new_empty(rows, k1 if second is None else 2 * k1, p.shape[2])
    torch.mul(p, g[:, None, :], out=right[:, :k1])
    if second is not None:
        if branch.squeeze_weights is None:
            right[:, k1:] = p
        else:
            torch.mul(p, branch.squeeze_weights, out=right[:, k1:])
    both = torch.bmm(right, slope)
    first.copy_(both[:, :k1])
    if second is not None:
        second.copy_(both[:, k1:])


def patch_grad(p, w, branch, g, weights, grad_sums) -> torch.Tensor:  # noqa: ANN001
    """d loss / d patches (B, k+1, T*F), for an input that needs a gradient (tests); w are
    the folded weights of each sample (B, C, k+1)."""
    grad_h = torch.bmm(g[:, :, None], weights[:, None, :])  # (B, T*F, C)
    if grad_sums is not None:
        sq = branch.squeeze_weights
        grad_h += grad_sums[:, None, :] * (1.0 if sq is None else sq[:, None])
    grad_h *= _slope(p, w, branch, slice(None))
    return torch.bmm(grad_h, w).transpose(1, 2)


def squeeze_sum(h: torch.Tensor, branch: BranchConstants) -> torch.Tensor:
    """(rows, C): the (position-weighted) sum over positions that SE's mean needs."""
    if branch.squeeze_weights is None:
        return h.sum(1)
    return torch.matmul(branch.squeeze_weights, h)

