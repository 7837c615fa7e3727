"""BatchNorm inside the fast implementation's hand-written autograd: grouped statistics,
the folded forward and the factored backward, and the running-statistics update.

A group is one stream with its own weights: MS-SENet's two reading directions run as two
groups of every operation, so a BatchNorm position of a block holds one norm per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ser.models.reference.layers import BatchNorm


def update_running_stats(
    norms: Sequence[BatchNorm],
    means: torch.Tensor,
    variances: torch.Tensor,
    count: int,
) -> None:
    """What BatchNorm's train-mode forward does to the buffers of each norm: ``means[i]``
    and the biased ``variances[i]`` over `count` values are norm i's batch statistics
    (the running variance takes the unbiased one). With one momentum for all, in a few
    foreach calls; a norm without momentum (a cumulative average) one at a time."""
    unbiased = variances * (count / max(count - 1, 1))
    momenta = {norm.momentum for norm in norms}
    with torch.no_grad():
        if len(momenta) == 1 and None not in momenta:
            factor = momenta.pop()
            # torch._foreach_*: the multi-tensor ops torch.optim's own foreach paths use; no
            # public function updates a list of tensors in one call
            torch._foreach_add_([norm.num_batches_tracked for norm in norms], 1)
            running_means = [norm.running_mean for norm in norms]
            running_vars = [norm.running_var for norm in norms]
            torch._foreach_mul_(running_means, 1 - factor)
            torch._foreach_add_(running_means, list(means.unbind(0)), alpha=factor)
            torch._foreach_mul_(running_vars, 1 - factor)
            torch._foreach_add_(running_vars, list(unbiased.unbind(0)), alpha=factor)
            return
        for norm, mean, variance in zip(norms, means, unbiased, strict=True):
            norm.num_batches_tracked.add_(1)
            if norm.momentum is None:
                factor = 1.0 / float(norm.num_batches_tracked)
            else:
                factor = norm.momentum
            norm.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            norm.running_var.mul_(1 - factor).add_(variance, alpha=factor)


@dataclass
class NormGroup:
    """The BatchNorms at one position of a block, one per group, and their common mode."""

    norms: list[BatchNorm]
    batch_stats: bool
    update: bool

    def stacked(self, name: str) -> torch.Tensor:
        return torch.stack([getattr(norm, name) for norm in self.norms])

    @property
    def eps(self) -> torch.Tensor | float:
        values = [norm.eps for norm in self.norms]
        if all(v == values[0] for v in values):
            return values[0]
        like = self.norms[0].running_var
        return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None]


def norm_group(norms: Sequence[BatchNorm]) -> NormGroup:
    modes = {
        (
            norm.training or norm.running_mean is None,
            norm.training and norm.track_running_stats and norm.running_mean is not None,
        )
        for norm in norms
    }
    if len(modes) != 1:
        raise ValueError("grouped TABs need their BatchNorms in the same mode")
    ((batch_stats, update),) = modes
    return NormGroup(list(norms), batch_stats, update)


def normalise(z: torch.Tensor, group: NormGroup, bias, gamma, beta, mask):  # noqa: ANN001, ANN202
    """BatchNorm of z + bias, ReLU, dropout: z (G, B, T, C) the conv output without its
    bias. In place z -> z + bias - mean; returns (relu(BN(z + bias)) * mask, inv_std (G, C)).

    With batch statistics the bias cancels (z + b - mean(z + b) = z - mean(z)), so it only
    enters the running mean; with running statistics it joins the subtracted mean. Either
    way no pass over the tensor adds it."""
    groups, channels = z.shape[0], z.shape[3]
    flat = z.view(groups, -1, channels)
    if group.batch_stats:
        count = flat.shape[1]
        mean = flat.sum(1) / count
        flat.sub_(mean[:, None, :])
        # a reduction without a (G, N, C) temporary (fresh, hence cold, memory is slow)
        var = torch.linalg.vector_norm(flat, dim=1).square_() / count
        if group.update:
            update_running_stats(group.norms, mean + bias, var, count)
    else:
        flat.sub_((group.stacked("running_mean") - bias)[:, None, :])
        var = group.stacked("running_var")
    inv_std = torch.rsqrt(var + group.eps)
    gain = inv_std if gamma is None else gamma * inv_std
    shift = beta if beta is not None else torch.zeros_like(gain)
    gain, shift = gain[:, None, None, :], shift[:, None, None, :]
    if mask is not None:
        gain = gain * mask
        shift = shift * mask
    return torch.addcmul(shift, z, gain).relu_(), inv_std


def normalise_backward(gu: torch.Tensor, centred: torch.Tensor, inv_std, gamma, batch_stats: bool):  # noqa: ANN001, ANN202
    """BatchNorm's backward given d loss / d output (gu), in place on gu and factored:
    d loss / d input = scale * (gu' + offset) per group and channel, so that these factors
    reach the following GEMMs' small operands instead of another pass over the tensor.
    Returns (gu', scale, offset, d gamma, d beta), the last four (G, C)."""
    groups, channels = gu.shape[0], gu.shape[3]
    flat_g = gu.view(groups, -1, channels)
    flat_c = centred.view(groups, -1, channels)
    grad_beta = flat_g.sum(1)
    grad_gamma = torch.bmm(flat_g.transpose(1, 2), flat_c).diagonal(dim1=1, dim2=2) * inv_std
    scale = inv_std if gamma is None else gamma * inv_std
    if batch_stats:
        # d input = scale * (gu - mean(gu) - xhat * mean(gu * xhat)), xhat = centred * inv_std
        count = flat_g.shape[1]
        flat_g.addcmul_(flat_c, (-inv_std * grad_gamma / count)[:, None, :])
        offset = -grad_beta / count
    else:
        offset = torch.zeros_like(grad_beta)
    return gu, scale, offset, grad_gamma, grad_beta

