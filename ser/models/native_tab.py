"""The fast TAB with its elementwise work in fused C kernels (ser/models/native/tab.c).

Same function, parameters and random numbers as `_TemporalAwareBlockFunction` in fast.py
(the PyTorch formulation, used when the kernels are unavailable). Per block and group:

forward   z1 = causal_conv(x)              two GEMMs (bias-free: BatchNorm takes the bias)
          stats(z1)                        one read pass
          a1 = relu(A1 z1 + S1)            one pass (BatchNorm, ReLU, dropout folded in A, S)
          z2 = causal_conv(a1), stats(z2)
          out = x sigmoid(relu(A2 z2 + S2)) and its time mean, one pass
backward  two passes over (g, x, z2): BatchNorm's sums, then gz2 and d out / d x directly
          GEMMs for conv 2's weight and input gradients
          two passes over (g a1, z1): BatchNorm's sums, then gz1 in place
          GEMMs for conv 1, the input gradient accumulated onto the direct path.
Saved for backward: x, z1, a1, z2 and per-channel statistics; neither the centred
tensors, nor the sigmoid, nor the output.
"""

from __future__ import annotations

import torch

from ser.models import native


def _conv(x: torch.Tensor, w1t: torch.Tensor, w0t: torch.Tensor, d: int) -> torch.Tensor:
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


def _conv_input_grad(
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


def _conv_weight_grad(gz: torch.Tensor, x: torch.Tensor, d: int) -> torch.Tensor:
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


class _Norm:
    """One BatchNorm position of a block (both groups): statistics and folded factors."""

    def __init__(self, z: torch.Tensor, group, bias, gamma, beta, mask) -> None:  # noqa: ANN001
        lib = native.library()
        groups, batch, frames, channels = z.shape
        count = batch * frames
        self.count = count
        if group.batch_stats:
            total = torch.empty(groups, channels, dtype=torch.float64)
            squares = torch.empty_like(total)
            if lib.tab_stats(
                z.data_ptr(), groups, count, channels, total.data_ptr(), squares.data_ptr(),
                native.threads(),
            ):
                raise MemoryError("tab_stats could not allocate its partial sums")
            mean = total / count
            var = (squares / count - mean.square()).clamp_min(0)
            self.sum_z = total
            mean, var = mean.float(), var.float()
            if group.update:
                from ser.models.fast import _update_running_stats

                for i, norm in enumerate(group.norms):
                    _update_running_stats(norm, mean[i] + bias[i], var[i], count)
        else:
            mean = group.stacked("running_mean") - bias
            var = group.stacked("running_var")
            self.sum_z = None
        self.batch_stats = group.batch_stats
        self.mean = mean.contiguous()
        self.inv_std = torch.rsqrt(var + group.eps).contiguous()
        gain = self.inv_std if gamma is None else gamma * self.inv_std
        self.scale = gain.contiguous()  # d BN / d z per (g, c)
        shift = -mean * gain if beta is None else beta - mean * gain
        coefficient, offset = gain[:, None, :], shift[:, None, :]
        if mask is not None:  # (G, B, 1, C) dropout factors
            coefficient, offset = coefficient * mask[:, :, 0], offset * mask[:, :, 0]
        shape = (groups, batch, channels)
        self.A = coefficient.expand(shape).contiguous()
        self.S = offset.expand(shape).contiguous()
        # the dropout factors alone, for the backward's ReLU mask (ones without dropout)
        self.M = z.new_ones(shape) if mask is None else mask[:, :, 0].expand(shape).contiguous()

    def detach(self) -> None:
        for name in ("mean", "inv_std", "scale", "A", "S"):
            setattr(self, name, getattr(self, name).detach())


def _backward_pass(norm: _Norm, gate: bool, gin, gmean, x, z, gz, gdirect):  # noqa: ANN001, ANN202
    """BatchNorm's sums, then gz (and the gate's direct path): see tab_backward in tab.c."""
    lib = native.library()
    groups, batch, frames, channels = z.shape
    sum_gu = torch.empty(groups, channels, dtype=torch.float64)
    sum_gx = torch.empty_like(sum_gu)
    args = [
        native.pointer(gin), native.pointer(gmean), native.pointer(x), z.data_ptr(),
        norm.A.data_ptr(), norm.S.data_ptr(), norm.M.data_ptr(), norm.mean.data_ptr(),
        norm.inv_std.data_ptr(),
    ]
    tail = [groups, batch, frames, channels, native.threads()]
    zeros = [None] * 5
    if lib.tab_backward(0, int(gate), *args, None, None, None, *zeros[:2],
                        sum_gu.data_ptr(), sum_gx.data_ptr(), *tail):
        raise MemoryError("tab_backward could not allocate its partial sums")
    grad_beta, grad_gamma = sum_gu.float(), sum_gx.float()
    if norm.batch_stats:
        k1 = (sum_gu / norm.count).float().contiguous()
        k2 = (sum_gx / norm.count).float().contiguous()
    else:
        k1 = k2 = torch.zeros_like(grad_beta)
    lib.tab_backward(1, int(gate), *args, norm.scale.data_ptr(), k1.data_ptr(), k2.data_ptr(),
                     gz.data_ptr(), native.pointer(gdirect), None, None, *tail)
    # d loss / d conv bias = sum over rows of gz, from the sums above without a pass:
    # scale * (sum gu - N k1 - k2 * sum xhat), sum xhat = (sum z - N mean) * inv_std.
    if norm.batch_stats:
        sum_xhat = ((norm.sum_z - norm.count * norm.mean.double()) * norm.inv_std.double()).float()
        grad_bias = norm.scale * (grad_beta - norm.count * k1 - k2 * sum_xhat)
    else:
        grad_bias = norm.scale * grad_beta
    return grad_gamma, grad_beta, grad_bias


class NativeTemporalAwareBlockFunction(torch.autograd.Function):
    """TABs on (G, B, T, C) float32 CPU tensors; returns the outputs and their time means.

    The arguments are those of fast.py's `_TemporalAwareBlockFunction`."""

    @staticmethod
    def forward(ctx, x, wa, ba, ga, bea, wb, bb, gb, beb, d, norms, masks):  # noqa: ANN001
        lib = native.library()
        m1, m2 = masks
        groups, batch, frames, channels = x.shape
        z1 = _conv(x, wa[..., 1].transpose(1, 2), wa[..., 0].transpose(1, 2), d)
        n1 = _Norm(z1, norms[0], ba, ga, bea, m1)
        a1 = torch.empty_like(z1)
        lib.tab_norm_relu(z1.data_ptr(), n1.A.data_ptr(), n1.S.data_ptr(), a1.data_ptr(),
                          groups * batch, frames, channels, native.threads())
        z2 = _conv(a1, wb[..., 1].transpose(1, 2), wb[..., 0].transpose(1, 2), d)
        n2 = _Norm(z2, norms[1], bb, gb, beb, m2)
        out = torch.empty_like(x)
        mean = x.new_empty(groups, batch, channels)
        lib.tab_gate(z2.data_ptr(), x.data_ptr(), n2.A.data_ptr(), n2.S.data_ptr(),
                     out.data_ptr(), mean.data_ptr(), groups * batch, frames, channels,
                     native.threads())
        n1.detach()
        n2.detach()
        ctx.set_materialize_grads(False)
        ctx.d = d
        ctx.norm_factors = (n1, n2)
        ctx.save_for_backward(x, wa, wb, z1, a1, z2)
        return out, mean

    @staticmethod
    def backward(ctx, g, g_mean):  # noqa: ANN001
        if g is None and g_mean is None:
            return (None,) * 12
        x, wa, wb, z1, a1, z2 = ctx.saved_tensors
        n1, n2 = ctx.norm_factors
        d = ctx.d
        frames = x.shape[2]
        g = None if g is None else g.contiguous()
        if g_mean is None:  # the kernel reads the mean's gradient, zeros without one
            gmean = x.new_zeros(x.shape[0], x.shape[1], x.shape[3])
        else:
            gmean = (g_mean / frames).contiguous()
        gz2 = torch.empty_like(z2)
        gx = torch.empty_like(x)  # first the direct path of out = x * s
        g_gb, g_beb, g_bb = _backward_pass(n2, True, g, gmean, x, z2, gz2, gx)
        g_wb = _conv_weight_grad(gz2, a1, d)
        ga1 = _conv_input_grad(gz2, wb[..., 1], wb[..., 0], d)
        del gz2
        g_ga, g_bea, g_ba = _backward_pass(n1, False, ga1, None, None, z1, ga1, None)
        g_wa = _conv_weight_grad(ga1, x, d)
        _conv_input_grad(ga1, wa[..., 1], wa[..., 0], d, into=gx)
        grads = (gx, g_wa, g_ba, g_ga, g_bea, g_wb, g_bb, g_gb, g_beb)
        needed = ctx.needs_input_grad
        return (*(gr if needed[i] else None for i, gr in enumerate(grads)), None, None, None)
