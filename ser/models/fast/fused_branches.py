"""The fusion block's branches, SE and 1x1 projection as one autograd Function.

`FastTimeFrequencyFusion` (fusion.py) folds each branch's conv and BatchNorm into one
linear map of the input's patches (patches.py); this Function computes everything after
that map without storing the (batch, filters, frames, branches * features) activations:
they exist a chunk of samples at a time, and every gradient comes from
[g * P; q * P] @ relu'(h) per branch and sample. The chunks run with the C kernels
(branches_native.py) where they apply, else with PyTorch operations (branches.py).
"""

from __future__ import annotations

import torch

from ser.models.fast.branches import (
    FusedConfig,
    activation,
    channel_masks,
    patch_grad,
    per_sample,
    se_backward,
    se_forward,
    slope_products,
    squeeze_sum,
)
from ser.models.fast.branches_native import (
    native_applies,
    native_fused_forward,
    native_slope_products,
)


class FusedBranches(torch.autograd.Function):
    """relu(P_b^T W'_b^T) -> [dropout] -> SE -> per-(sample, channel) weighted channel sum.

    Inputs: config, then the parameters of S fusion blocks, one per segment of samples
    (config.segments; S = 1 for one network): projection weights w (S, C), SE parameters
    (w1 (S, C', C), b1 (S, C'), w2 (S, C, C'), b2 (S, C) or Nones), then per branch the
    patches P_b (B, k_b+1, T*F) of all samples and the folded weights W'_b (S, C, k_b+1).
    Output: (B, T, branches, F), the 1x1 projection of the SE-scaled concatenation before
    its bias, ReLU and (for the avgpool regulariser) the pooling. The activations exist a
    chunk of samples at a time (docs/performance.md, section "The fused branches").
    """

    @staticmethod
    def forward(ctx, config: FusedConfig, w, w1, b1, w2, b2, *branch_tensors):  # noqa: ANN001
        nb = len(config.branches)
        ps, ws = branch_tensors[:nb], branch_tensors[nb:]
        batch, _, positions = ps[0].shape
        channels = ws[0].shape[1]
        se = config.squeeze_excitation
        w_rows = per_sample(w, batch)
        masks = channel_masks(config, w_rows)
        base = w_rows[:, None, :].expand(batch, nb, channels) if masks is None else w_rows[:, None, :] * masks
        out = ps[0].new_empty(nb, batch, positions)  # each (branch, sample) row contiguous
        sums = ps[0].new_empty(batch, nb, channels) if se else None
        ctx.signs = None
        if native_applies(config, ps[0]):
            ctx.signs = native_fused_forward(
                config, ps, ws, base, masks, sums, out, (w1, b1, w2, b2),
                record_signs=any(ctx.needs_input_grad),
            )
        else:
            for segment, sl in config.chunks(batch):
                acts = [
                    activation(ps[b][sl], ws[b][segment], config.branches[b], sl)
                    for b in range(nb)
                ]
                weights = base[sl]
                if se:
                    for b in range(nb):
                        sums[sl, b] = squeeze_sum(acts[b], config.branches[b])
                    part = sums[sl] if masks is None else sums[sl] * masks[sl]
                    s = part.sum(1) / config.squeeze_denominator
                    params = (w1[segment], b1[segment], w2[segment], b2[segment])
                    weights = weights * se_forward(s, *params)[2][:, None, :]
                for b in range(nb):
                    torch.bmm(acts[b], weights[:, b, :, None], out=out[b, sl, :, None])
        ctx.config = config
        ctx.save_for_backward(w, w1, b1, w2, b2, sums, *ps, *ws)
        # (B, T, nb, F), the reference's concatenation order along features (a view)
        out = out.view(nb, batch, -1, config.features)
        if config.reverse:
            out = out.flip(2)
        return out.permute(1, 2, 0, 3)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        config: FusedConfig = ctx.config
        nb = len(config.branches)
        w, w1, b1, w2, b2, sums, *rest = ctx.saved_tensors
        ps, ws = rest[:nb], rest[nb:]
        batch = ps[0].shape[0]
        segments, channels = ws[0].shape[0], ws[0].shape[1]
        se = config.squeeze_excitation
        need_p = [ctx.needs_input_grad[6 + b] for b in range(nb)]
        # (B, nb, T*F), branch-major like the activations
        grad_out = grad_out.permute(0, 2, 1, 3)
        if config.reverse:
            grad_out = grad_out.flip(2)
        grad_out = grad_out.reshape(batch, nb, -1)
        w_rows = per_sample(w, batch)
        masks = channel_masks(config, w_rows)
        weights = w_rows[:, None, :].expand(batch, nb, channels) if masks is None else w_rows[:, None, :] * masks
        if se:
            part = sums if masks is None else sums * masks
            s = part.sum(1) / config.squeeze_denominator
            pre, hidden, scale = se_forward(s, w1, b1, w2, b2)
            weights = weights * scale[:, None, :]
        # act = slope * h with h = P^T W'^T and slope = relu'(h) [* dropout factor], so
        # every gradient comes from [g * P; q * P] @ slope, one GEMM per branch and chunk
        # that never materialises a gradient of the (rows, T*F, C) activations:
        #   d out / d weights[n, b, c] = sum_t g[t] act[t, c] = sum_k W'[c, k] first[k, c]
        #   d loss / d W'[c, k] = sum_n weights[n, c] first[n, k, c] + grad_sums[n, c] second[n, k, c]
        firsts = [p.new_empty(batch, p.shape[1], channels) for p in ps]
        seconds = [p.new_empty(batch, p.shape[1], channels) for p in ps] if se else None
        signs = ctx.signs
        if signs is not None and any(p.shape[1] % 2 for p in ps):
            signs = None  # the kernel pairs patch rows; odd kernels always give an even count
        if signs is not None:
            native_slope_products(config, ps, grad_out, signs, firsts, seconds)
        else:
            for segment, sl in config.chunks(batch):
                for b in range(nb):
                    slope_products(
                        ps[b][sl], ws[b][segment], config.branches[b], grad_out[sl, b], sl,
                        firsts[b][sl], seconds[b][sl] if se else None,
                    )
        ws_rows = [per_sample(wb, batch) for wb in ws]  # (B, C, k+1)
        # (B, nb, C); products and sums rather than einsum, whose per-sample matrix
        # products copied thousands of tiny operands
        grad_weights = torch.stack(
            [(first * wb.transpose(1, 2)).sum(1) for first, wb in zip(firsts, ws_rows, strict=True)], dim=1
        )
        wm = grad_weights if masks is None else grad_weights * masks

        def per_segment(values: torch.Tensor) -> torch.Tensor:  # sum over each segment's samples
            return values.view(segments, batch // segments, *values.shape[1:]).sum(1)

        grad_w = per_segment((wm * scale[:, None, :]).sum(1) if se else wm.sum(1))
        grad_w1 = grad_b1 = grad_w2 = grad_b2 = grad_sums = None
        if se:
            grad_scale = (wm * w_rows[:, None, :]).sum(1)
            grad_w1, grad_b1, grad_w2, grad_b2, grad_s = se_backward(
                grad_scale, s, pre, hidden, scale, w1, w2
            )
            grad_s = grad_s / config.squeeze_denominator  # (B, C)
            # s = sum_b masks_b * sums_b / denominator
            grad_sums = grad_s[:, None, :] if masks is None else grad_s[:, None, :] * masks
            grad_sums = grad_sums.expand(batch, nb, channels)
        grad_ws = []
        for b in range(nb):
            gw = weights[:, b, None, :] * firsts[b]
            if se:
                gw = gw + grad_sums[:, b, None, :] * seconds[b]
            grad_ws.append(per_segment(gw).transpose(1, 2) if ctx.needs_input_grad[6 + nb + b] else None)
        grad_ps = [None] * nb
        for b in range(nb):
            if need_p[b]:  # only when the input needs a gradient (never in training)
                grad_ps[b] = patch_grad(
                    ps[b], ws_rows[b], config.branches[b], grad_out[:, b], weights[:, b],
                    None if grad_sums is None else grad_sums[:, b],
                )
        return None, grad_w, grad_w1, grad_b1, grad_w2, grad_b2, *grad_ps, *grad_ws
