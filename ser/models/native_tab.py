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
from ser.models.causal_conv import causal_conv, causal_conv_input_grad, causal_conv_weight_grad


class _Norm:
    """One BatchNorm position of a block (both groups): statistics and folded factors,
    all from two C calls (tab_stats, tab_coefficients)."""

    def __init__(self, z: torch.Tensor, group, bias, gamma, beta, mask) -> None:  # noqa: ANN001
        lib = native.library()
        groups, batch, frames, channels = z.shape
        count = batch * frames
        self.count = count
        self.batch_stats = group.batch_stats
        mu_in = var_in = None
        stats = None
        if group.batch_stats:
            stats = torch.empty(2, groups, channels, dtype=torch.float64)
            if lib.tab_stats(
                z.data_ptr(), groups, count, channels, stats[0].data_ptr(),
                stats[1].data_ptr(), native.threads(),
            ):
                raise MemoryError("tab_stats could not allocate its partial sums")
        else:
            mu_in = (group.stacked("running_mean") - bias).contiguous()
            var_in = group.stacked("running_var").contiguous()
        eps = torch.as_tensor(group.eps, dtype=torch.float32).reshape(-1).expand(groups)
        eps = eps.contiguous()
        gamma = None if gamma is None else gamma.detach().contiguous()
        beta = None if beta is None else beta.detach().contiguous()
        mask = None if mask is None else mask.reshape(groups, batch, channels).contiguous()
        factors = z.new_empty(4, groups, channels)  # mean, var, 1/std, gain
        self.coefficients = z.new_empty(3, groups, batch, channels)  # A, S, M
        lib.tab_coefficients(
            int(group.batch_stats),
            None if stats is None else stats[0].data_ptr(),
            None if stats is None else stats[1].data_ptr(),
            count, native.pointer(mu_in), native.pointer(var_in), native.pointer(gamma),
            native.pointer(beta), eps.data_ptr(), native.pointer(mask),
            *(t.data_ptr() for t in factors), *(t.data_ptr() for t in self.coefficients),
            groups, batch, channels,
        )
        self.mean, var, self.inv_std, self.scale = factors
        self.A, self.S, self.M = self.coefficients
        self.sum_z = None if stats is None else stats[0]
        if group.batch_stats and group.update:
            _update_running_stats(group.norms, self.mean + bias.detach(), var, count)


def _update_running_stats(norms, means: torch.Tensor, variances: torch.Tensor, count: int) -> None:  # noqa: ANN001
    """BatchNorm's train-mode buffer update for each group's norm, in a few foreach calls
    (fast.py's `_update_running_stats` one norm at a time when their momenta differ)."""
    momenta = {norm.momentum for norm in norms}
    if len(momenta) != 1 or None in momenta:
        from ser.models.fast import _update_running_stats as update_one

        for i, norm in enumerate(norms):
            update_one(norm, means[i], variances[i], count)
        return
    factor = momenta.pop()
    unbiased = variances * (count / max(count - 1, 1))
    with torch.no_grad():
        torch._foreach_add_([norm.num_batches_tracked for norm in norms], 1)
        running_means = [norm.running_mean for norm in norms]
        running_vars = [norm.running_var for norm in norms]
        torch._foreach_mul_(running_means, 1 - factor)
        torch._foreach_add_(running_means, list(means.unbind(0)), alpha=factor)
        torch._foreach_mul_(running_vars, 1 - factor)
        torch._foreach_add_(running_vars, list(unbiased.unbind(0)), alpha=factor)


def _backward_pass(norm: _Norm, gate: bool, gin, gmean, x, z, gz, gdirect):  # noqa: ANN001, ANN202
    """BatchNorm's sums, then gz (and the gate's direct path): see tab_backward in tab.c.
    Returns the gradients of gamma, beta and the conv bias, each (G, C)."""
    lib = native.library()
    groups, batch, frames, channels = z.shape
    sums = torch.empty(2, groups, channels, dtype=torch.float64)
    args = [
        native.pointer(gin), native.pointer(gmean), native.pointer(x), z.data_ptr(),
        norm.A.data_ptr(), norm.S.data_ptr(), norm.M.data_ptr(), norm.mean.data_ptr(),
        norm.inv_std.data_ptr(),
    ]
    tail = [groups, batch, frames, channels, native.threads()]
    if lib.tab_backward(0, int(gate), *args, None, None, None, None, None,
                        sums[0].data_ptr(), sums[1].data_ptr(), *tail):
        raise MemoryError("tab_backward could not allocate its partial sums")
    factors = z.new_empty(5, groups, channels)  # k1, k2, d gamma, d beta, d conv bias
    lib.tab_backward_factors(
        int(norm.batch_stats), sums[0].data_ptr(), sums[1].data_ptr(),
        None if norm.sum_z is None else norm.sum_z.data_ptr(), norm.count,
        norm.mean.data_ptr(), norm.inv_std.data_ptr(), norm.scale.data_ptr(),
        *(t.data_ptr() for t in factors), groups * channels,
    )
    k1, k2, grad_gamma, grad_beta, grad_bias = factors
    lib.tab_backward(1, int(gate), *args, norm.scale.data_ptr(), k1.data_ptr(), k2.data_ptr(),
                     gz.data_ptr(), native.pointer(gdirect), None, None, *tail)
    return grad_gamma, grad_beta, grad_bias


class NativeTemporalAwareBlockFunction(torch.autograd.Function):
    """TABs on (G, B, T, C) float32 CPU tensors; returns the outputs and their time means.

    The arguments are those of fast.py's `_TemporalAwareBlockFunction`."""

    @staticmethod
    def forward(ctx, x, wa, ba, ga, bea, wb, bb, gb, beb, d, norms, masks):  # noqa: ANN001
        lib = native.library()
        m1, m2 = masks
        groups, batch, frames, channels = x.shape
        z1 = causal_conv(x, wa[..., 1].transpose(1, 2), wa[..., 0].transpose(1, 2), d)
        n1 = _Norm(z1, norms[0], ba, ga, bea, m1)
        a1 = torch.empty_like(z1)
        lib.tab_norm_relu(z1.data_ptr(), n1.A.data_ptr(), n1.S.data_ptr(), a1.data_ptr(),
                          groups * batch, frames, channels, native.threads())
        z2 = causal_conv(a1, wb[..., 1].transpose(1, 2), wb[..., 0].transpose(1, 2), d)
        n2 = _Norm(z2, norms[1], bb, gb, beb, m2)
        out = torch.empty_like(x)
        mean = x.new_empty(groups, batch, channels)
        lib.tab_gate(z2.data_ptr(), x.data_ptr(), n2.A.data_ptr(), n2.S.data_ptr(),
                     out.data_ptr(), mean.data_ptr(), groups * batch, frames, channels,
                     native.threads())
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
        g_wb = causal_conv_weight_grad(gz2, a1, d)
        ga1 = causal_conv_input_grad(gz2, wb[..., 1], wb[..., 0], d)
        del gz2
        g_ga, g_bea, g_ba = _backward_pass(n1, False, ga1, None, None, z1, ga1, None)
        g_wa = causal_conv_weight_grad(ga1, x, d)
        causal_conv_input_grad(ga1, wa[..., 1], wa[..., 0], d, into=gx)
        grads = (gx, g_wa, g_ba, g_ga, g_bea, g_wb, g_bb, g_gb, g_beb)
        needed = ctx.needs_input_grad
        return (*(gr if needed[i] else None for i, gr in enumerate(grads)), None, None, None)
