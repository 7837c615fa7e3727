"""Kernel-2 causal dilated convolutions on (G, B, T, C) as GEMMs over all frames at once,
without bias (a BatchNorm follows and takes it), and their plain gradients. Shared by the
fast TAB's PyTorch formulation (ser/models/fast.py) and its C-kernel one
(ser/models/native_tab.py)."""

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
