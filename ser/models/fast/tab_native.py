"""The fast TAB with its elementwise work in fused C kernels (ser/models/native/tab.c).

Same function, parameters and random numbers as `TemporalAwareBlockFunction` in tab.py
(the PyTorch formulation, used when the kernels are unavailable). Per block and group the
causal convs are GEMMs and the BatchNorm statistics, BatchNorm+ReLU+dropout, the sigmoid
gate with its time mean and the backward's sums are a few passes of the kernels. Saved
for backward: x, z1, a1, z2 and per-channel statistics. The kernels are reached only
through the checked operators of ser/models/native/ops.py. The passes one by one:
docs/performance.md, section "The fused TAB".
"""

from __future__ import annotations

import torch

from ser.models.fast.batchnorm import NormGroup, update_running_stats
from ser.models.fast.causal_conv import (
    causal_conv,
    causal_conv_input_grad,
    causal_conv_weight_grad,
)
from ser.models.native import ops


class _Norm:
    """One BatchNorm position of a block (all groups): its statistics, the per-channel
    factors (mean, var, 1/std, gain) and the per-(group, sample, channel) coefficients
    (A, S, M: BatchNorm and dropout folded), from two kernels (tab_stats, tab_coefficients)."""

    def __init__(self, z: torch.Tensor, group: NormGroup, bias, gamma, beta, mask) -> None:  # noqa: ANN001
        groups, batch, frames, channels = z.shape
        self.count = batch * frames
        self.stats = None
        mean_in = var_in = None
        if group.batch_stats:
            self.stats = torch.empty(2, groups, channels, dtype=torch.float64)  # sums of z, z^2
            ops.tab_stats(z, self.stats)
        else:
            mean_in = (group.stacked("running_mean") - bias).contiguous()
            var_in = group.stacked("running_var").contiguous()
        eps = torch.as_tensor(group.eps, dtype=torch.float32).reshape(-1).expand(groups)
        self.factors = z.new_empty(4, groups, channels)  # mean, var, 1/std, gain
        self.coefficients = z.new_empty(3, groups, batch, channels)  # A, S, M
        ops.tab_coefficients(
            self.count, self.stats, mean_in, var_in,
            None if gamma is None else gamma.detach().contiguous(),
            None if beta is None else beta.detach().contiguous(), eps.contiguous(),
            None if mask is None else mask.reshape(groups, batch, channels).contiguous(),
            self.factors, self.coefficients,
        )
        if group.batch_stats and group.update:
            mean, var = self.factors[0], self.factors[1]
            update_running_stats(group.norms, mean + bias.detach(), var, self.count)

    def backward(self, z, grad, x, grad_mean, grad_z, grad_direct):  # noqa: ANN001, ANN201
        """BatchNorm's sums, then gz (and the gate's direct path): see tab_backward in
        tab.c. Returns the gradients of gamma, beta and the conv bias, each (G, C)."""
        groups, _, _, channels = z.shape
        sums = torch.empty(2, groups, channels, dtype=torch.float64)
        ops.tab_backward_sums(
            z, self.coefficients, self.factors, grad, x, grad_mean, sums
        )
        factors = z.new_empty(5, groups, channels)  # k1, k2, d gamma, d beta, d conv bias
        ops.tab_backward_factors(self.count, sums, self.stats, self.factors, factors)
        # without the gate the incoming gradient is grad_z's own (in place)
        ops.tab_backward_grad(
            z, self.coefficients, self.factors, factors, grad if x is not None else None,
            x, grad_mean, grad_z, grad_direct,
        )
        return factors[2], factors[3], factors[4]


class NativeTemporalAwareBlockFunction(torch.autograd.Function):
    """TABs on (G, B, T, C) float32 CPU tensors; returns the outputs and their time means.

    The arguments are those of tab.py's `TemporalAwareBlockFunction`."""

    @staticmethod
    def forward(ctx, x, wa, ba, ga, bea, wb, bb, gb, beb, d, norms, masks):  # noqa: ANN001
        m1, m2 = masks
        groups, batch, _, channels = x.shape
        taps_a = wa.permute(3, 0, 2, 1).contiguous()  # (2, G, C_in, C_out): W0^T, W1^T
        z1 = causal_conv(x, taps_a[1], taps_a[0], d)
        n1 = _Norm(z1, norms[0], ba, ga, bea, m1)
        a1 = torch.empty_like(z1)
        ops.tab_norm_relu(z1, n1.coefficients, a1)
        taps_b = wb.permute(3, 0, 2, 1).contiguous()
        z2 = causal_conv(a1, taps_b[1], taps_b[0], d)
        n2 = _Norm(z2, norms[1], bb, gb, beb, m2)
        out = torch.empty_like(x)
        mean = x.new_empty(groups, batch, channels)
        ops.tab_gate(z2, x, n2.coefficients, out, mean)
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
        g_gb, g_beb, g_bb = n2.backward(z2, g, x, gmean, gz2, gx)
        g_wb = causal_conv_weight_grad(gz2, a1, d)
        taps_b = wb.permute(3, 0, 1, 2).contiguous()  # (2, G, C_out, C_in): W0, W1
        ga1 = causal_conv_input_grad(gz2, taps_b[1], taps_b[0], d)
        del gz2
        g_ga, g_bea, g_ba = n1.backward(z1, ga1, None, None, ga1, None)
        g_wa = causal_conv_weight_grad(ga1, x, d)
        taps_a = wa.permute(3, 0, 1, 2).contiguous()
        causal_conv_input_grad(ga1, taps_a[1], taps_a[0], d, into=gx)
        grads = (gx, g_wa, g_ba, g_ga, g_bea, g_wb, g_bb, g_gb, g_beb)
        needed = ctx.needs_input_grad
        return (*(gr if needed[i] else None for i, gr in enumerate(grads)), None, None, None)
