"""Kernel-2 causal dilated convolutions on (G, B, T, C) as GEMMs over all frames at once,
without bias (a BatchNorm follows and takes it), and their gradients: plain (the TAB with
C kernels, tab_native.py) and for an output gradient in BatchNorm's factored form
scale * (gz + offset) (the PyTorch formulation, tab.py)."""

from __future__ import annotations

import torch


def causal_conv(x: torch.Tensor, w1t: torch.Tensor, w0t: torch.Tensor, d: int) -> torch.Tensor:
    """Kernel-2 causal dilated conv of x (G, B, T, C), no bias: x[t] W1^T + x[t-d] W0^T."""
    groups, batch, frames, channels = x.shape
    flat = x.view(groups, -1, channels)
    z = torch.bmm(flat, w1t)
    if d >= frames:
        return z.view(groups, batch, frames, -1)
    if 2 * d <= frames:
        # the past tap over the flattened rows, less what crossed from the previous sample
        z[:, d:].baddbmm_(flat[:, :-d], w0t)
        z = z.view(groups, batch, frames, -1)
        if batch > 1:
            crossed = x[:, :-1, frames - d :].reshape(groups, -1, channels)
            z[:, 1:, :d].sub_(torch.bmm(crossed, w0t).view(groups, batch - 1, d, -1))
        return z
    z = z.view(groups, batch, frames, -1)
    past = torch.bmm(flat, w0t).view(groups, batch, frames, -1)
    z[:, :, d:] += past[:, :, :-d]
    return z


def causal_conv_input_grad(
    gz: torch.Tensor, w1: torch.Tensor, w0: torch.Tensor, d: int, into: torch.Tensor | None = None
) -> torch.Tensor:
    """d conv / d x applied to gz, gx[t] = gz[t] W1 + gz[t + d] W0, added onto `into` in
    place when given."""
    groups, batch, frames, channels = gz.shape
    flat = gz.view(groups, -1, channels)
    if into is None:
        gx = torch.bmm(flat, w1).view(groups, batch, frames, -1)
    else:
        gx = into
        gx.view(groups, -1, gx.shape[3]).baddbmm_(flat, w1)
    out = gx.view(groups, -1, gx.shape[3])
    if d >= frames:
        return gx
    if 2 * d <= frames:
        out[:, :-d].baddbmm_(flat[:, d:], w0)
        if batch > 1:
            crossed = gz[:, 1:, :d].reshape(groups, -1, channels)
            gx[:, :-1, frames - d :].sub_(torch.bmm(crossed, w0).view(groups, batch - 1, d, -1))
        return gx
    future = torch.bmm(flat, w0).view(groups, batch, frames, -1)
    gx[:, :, :-d] += future[:, :, d:]
    return gx


def causal_conv_weight_grad(gz: torch.Tensor, x: torch.Tensor, d: int) -> torch.Tensor:
    """d loss / d W (G, C_out, C_in, 2) for output gradient gz and input x."""
    groups, batch, frames, channels = gz.shape
    flat_g, flat_x = gz.view(groups, -1, channels), x.view(groups, -1, x.shape[3])
    grad = gz.new_empty(groups, channels, x.shape[3], 2)
    grad[..., 1] = torch.bmm(flat_g.transpose(1, 2), flat_x)
    if d >= frames:
        grad[..., 0] = 0
    elif 2 * d <= frames:
        past = torch.bmm(flat_g[:, d:].transpose(1, 2), flat_x[:, :-d])
        if batch > 1:
            g_start = gz[:, 1:, :d].reshape(groups, -1, channels)
            x_end = x[:, :-1, frames - d :].reshape(groups, -1, x.shape[3])
            past.sub_(torch.bmm(g_start.transpose(1, 2), x_end))
        grad[..., 0] = past
    else:
        g_now = gz[:, :, d:].reshape(groups, -1, channels)
        x_past = x[:, :, :-d].reshape(groups, -1, x.shape[3])
        grad[..., 0] = torch.bmm(g_now.transpose(1, 2), x_past)
    return grad


def causal_conv_input_grad_factored(gz: torch.Tensor, scale, offset, w1, w0, d: int) -> torch.Tensor:  # noqa: ANN001
    """d loss / d x of the causal conv, given its output gradient as scale * (gz + offset)
    (per group and output channel; see `normalise_backward` in batchnorm.py): a fresh tensor."""
    groups, batch, frames, channels = gz.shape
    flat = gz.view(groups, -1, channels)
    w1 = w1 * scale[:, :, None]
    shift = torch.bmm(offset[:, None, :], w1)  # (G, 1, C_in): the offset's share
    if d >= frames:
        return torch.baddbmm(shift, flat, w1).view(groups, batch, frames, -1)
    w0 = w0 * scale[:, :, None]
    shift0 = torch.bmm(offset[:, None, :], w0)  # reaches frames t < T - d only
    if 2 * d <= frames:
        # Frame t takes gz[t + d] @ W0: accumulate it over the flattened rows in place, then
        # take back what crossed from the start of one sample into the end of the previous.
        gx = torch.baddbmm(shift + shift0, flat, w1)
        gx[:, :-d].baddbmm_(flat[:, d:], w0)
        gx = gx.view(groups, batch, frames, -1)
        gx[:, :, frames - d :] -= shift0[:, None]
        if batch > 1:
            crossed = gz[:, 1:, :d].reshape(groups, -1, channels)
            gx[:, :-1, frames - d :] -= torch.bmm(crossed, w0).view(groups, batch - 1, d, -1)
        return gx
    gx = torch.baddbmm(shift, flat, w1).view(groups, batch, frames, -1)
    future = torch.baddbmm(shift0, flat, w0).view(groups, batch, frames, -1)
    gx[:, :, :-d] += future[:, :, d:]
    return gx


def causal_conv_param_grads_factored(
    gz: torch.Tensor, scale, offset, x: torch.Tensor, d: int  # noqa: ANN001
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the (G, C_out, C_in, 2) conv weights and (G, C_out) biases, for the
    output gradient scale * (gz + offset)."""
    groups, batch, frames, channels = gz.shape
    flat_g = gz.view(groups, -1, channels)
    flat_x = x.view(groups, -1, x.shape[3])
    grad = gz.new_empty(groups, channels, x.shape[3], 2)
    outer = offset[:, :, None] * flat_x.sum(1)[:, None, :]
    grad[..., 1] = torch.baddbmm(outer, flat_g.transpose(1, 2), flat_x)
    if d < frames:
        g_now = gz[:, :, d:].reshape(groups * batch, frames - d, channels)
        x_past = x[:, :, :-d].reshape(groups * batch, frames - d, x.shape[3])
        per_sample = torch.bmm(g_now.transpose(1, 2), x_past).view(groups, batch, channels, -1)
        past_sum = x[:, :, :-d].sum((1, 2))
        grad[..., 0] = per_sample.sum(1) + offset[:, :, None] * past_sum[:, None, :]
    else:
        grad[..., 0] = 0
    grad *= scale[:, :, None, None]
    bias = scale * (flat_g.sum(1) + flat_g.shape[1] * offset)
    return grad, bias

