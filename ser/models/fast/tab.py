"""The fast TAB's PyTorch formulation: TABs of several groups as one autograd Function.

(batch, frames, channels) layout; each kernel-2 dilated causal conv is two GEMMs over all
frames at once (the shifted tap accumulated in place; causal_conv.py), the conv bias is
absorbed by the following BatchNorm's centring, and the backward is written by hand with
BatchNorm's gradient kept in factored form (per-channel factors reach the small GEMM
operands; batchnorm.py). The C-kernel formulation of the same Function is tab_native.py.
"""

from __future__ import annotations

import torch

from ser.models.fast.batchnorm import normalise, normalise_backward
from ser.models.fast.causal_conv import (
    causal_conv,
    causal_conv_input_grad_factored,
    causal_conv_param_grads_factored,
)


class TemporalAwareBlockFunction(torch.autograd.Function):
    """TABs on (G, B, T, C), each group with its own (stacked) parameters; returns the
    blocks' outputs and their time means (G, B, C)."""

    @staticmethod
    def forward(ctx, x, wa, ba, ga, bea, wb, bb, gb, beb, d, norms, masks):  # noqa: ANN001
        m1, m2 = masks
        wa1, wa0 = wa[..., 1], wa[..., 0]
        wb1, wb0 = wb[..., 1], wb[..., 0]
        zc1 = causal_conv(x, wa1.transpose(1, 2), wa0.transpose(1, 2), d)
        a1, inv1 = normalise(zc1, norms[0], ba, ga, bea, m1)
        zc2 = causal_conv(a1, wb1.transpose(1, 2), wb0.transpose(1, 2), d)
        h, inv2 = normalise(zc2, norms[1], bb, gb, beb, m2)
        s = torch.sigmoid(h)
        out = x * s
        ctx.set_materialize_grads(False)
        ctx.d = d
        ctx.batch_stats = (norms[0].batch_stats, norms[1].batch_stats)
        ctx.masks = masks
        ctx.save_for_backward(x, wa, ga, wb, gb, zc1, a1, inv1, zc2, h, inv2, s)
        return out, out.mean(2)

    @staticmethod
    def backward(ctx, g, g_mean):  # noqa: ANN001
        x, wa, ga, wb, gb, zc1, a1, inv1, zc2, h, inv2, s = ctx.saved_tensors
        d = ctx.d
        m1, m2 = ctx.masks
        if g is None and g_mean is None:
            return (None,) * 12
        if g_mean is not None:  # the mean's gradient reaches every frame equally
            g_mean = (g_mean / x.shape[2])[:, :, None, :]
        # d loss / d out = g + g_mean, never materialised: (g + g_mean) * x = g * x + x * g_mean
        if g is None:
            gu2 = x * g_mean
        else:
            gu2 = g * x
            if g_mean is not None:
                gu2.addcmul_(x, g_mean)
        torch.ops.aten.sigmoid_backward.grad_input(gu2, s, grad_input=gu2)
        torch.ops.aten.threshold_backward.grad_input(gu2, h, 0.0, grad_input=gu2)
        if m2 is not None:
            gu2.mul_(m2)
        gz2, scale2, offset2, g_gb, g_beb = normalise_backward(
            gu2, zc2, inv2, gb, ctx.batch_stats[1]
        )
        g_wb, g_bb = causal_conv_param_grads_factored(gz2, scale2, offset2, a1, d)
        ga1 = causal_conv_input_grad_factored(gz2, scale2, offset2, wb[..., 1], wb[..., 0], d)
        gu1 = torch.ops.aten.threshold_backward.grad_input(ga1, a1, 0.0, grad_input=ga1)
        if m1 is not None:
            gu1.mul_(m1)
        gz1, scale1, offset1, g_ga, g_bea = normalise_backward(
            gu1, zc1, inv1, ga, ctx.batch_stats[0]
        )
        g_wa, g_ba = causal_conv_param_grads_factored(gz1, scale1, offset1, x, d)
        gx = causal_conv_input_grad_factored(gz1, scale1, offset1, wa[..., 1], wa[..., 0], d)
        # plus the direct path out = x * s
        if g is not None:
            gx.addcmul_(g, s)
        if g_mean is not None:
            gx.addcmul_(s, g_mean)
        grads = (gx, g_wa, g_ba, g_ga, g_bea, g_wb, g_bb, g_gb, g_beb)
        needed = ctx.needs_input_grad
        return (*(gr if needed[i] else None for i, gr in enumerate(grads)), None, None, None)

