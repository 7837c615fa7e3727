"""The "fast" implementation of MS-SENet / TIM-Net: the reference's function, recomputed.

The reference TFF block materialises (batch, filters, frames, branches * features) several
times (conv outputs, BatchNorm, ReLU, dropout, concatenation, SE scaling), about 220 MB
each at the paper's shape; fresh blocks of that size also pay for page faults. Its TAB
chain runs some 30 small operations per block and reading direction. This module computes
the same function (same parameters, same random numbers) with these observations:

TFF (`FastTimeFrequencyFusion`, `_FusedBranches`)
* Every branch conv has ONE input channel, so conv(x) = patches(x)^T @ W^T: one small GEMM
  per branch over patches of shape (kh*kw + 1, frames*features) per sample (a row of ones
  carries the bias, so the weight-gradient GEMM yields the bias gradient too).
* BatchNorm's batch statistics of a linear map of the patches follow from the patches'
  mean and covariance: mean = W mu, var = diag(W Sigma W^T). They cost a (k+1) x (k+1)
  matrix, autograd differentiates them on tiny tensors, and BatchNorm folds into the conv
  weights (W' = gamma / sigma * W, ...). The patches are shifted by the input's mean so the
  covariance loses no digits to cancellation.
* Spatial dropout is a per-(sample, channel) factor and SE's squeeze a per-(sample, channel)
  mean of the ReLU output, so SE scale, dropout mask and the 1x1 projection weight fold
  into per-(sample, channel) weights of one channel contraction.
* The ReLU output exists a few samples at a time and is reduced while in cache. Every
  gradient comes from [g * P; q * P] @ relu'(h) per branch and sample, never from a
  materialised activation gradient. With the C kernels (ser/models/native, float32 on the
  CPU) the forward's SE sums and channel contraction read the pre-activations once each
  and record one sign bit per value, and the backward takes those products as masked sums
  from the bits and the patches (`_native_slope_products`); otherwise the backward
  recomputes h with a GEMM, thresholds it and multiplies (`_slope_products`).
* MS-SENet's backward stream reads x reversed in time: 'same' convolution commutes with
  reversal when the kernel is flipped in time, so both streams share x's patches and
  moments (`shared_patches`, `projected(..., reverse=True)`).

TAB chain (`FastDirectionalStream`, `_TemporalAwareBlockFunction`)
* (batch, frames, channels) layout; each kernel-2 dilated causal conv is two GEMMs over all
  frames at once (the shifted tap accumulated in place), the conv bias is absorbed by the
  following BatchNorm's centring, and backward is written by hand with BatchNorm's
  gradient kept in factored form (per-channel factors reach the small GEMM operands).
  With the C kernels, `NativeTemporalAwareBlockFunction` (ser/models/native_tab.py) does
  the elementwise work in five fused passes instead of some twenty PyTorch operations.
* MS-SENet's two reading directions run as two groups of every operation (stacked weights),
  and MSSENet.embed takes only the per-level time means, never the stacked sequences.

Tracing, ONNX export and the meta device fall back to the reference computation
(`use_reference`). `FastTimeFrequencyFusion` and `FastDirectionalStream` subclass the
reference modules, so parameter names, initialisation and state dicts are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ser.models import native
from ser.models.blocks import TemporalAwareBlock
from ser.models.causal_conv import causal_conv
from ser.models.fusion import (
    FusionBranch,
    SamePaddingAveragePool2d,
    TimeFrequencyFusion,
    register_fusion_implementation,
)
from ser.models.native_tab import NativeTemporalAwareBlockFunction
from ser.models.networks import STREAM_IMPLEMENTATIONS, DirectionalStream

# Samples per chunk of `_FusedBranches`: three branches of (chunk, 188 * 39, 39) float32
# activations stay ~14 MB, so they are reduced while still in cache (2 to 4 measured best
# on 2 cores; 1 pays too much per-operation overhead, 8 spills the cache).
DEFAULT_CHUNK = 4


def patches(x: torch.Tensor, kernel: tuple[int, int], shift: torch.Tensor) -> torch.Tensor:
    """Shifted 'same' patches of the one-channel image x: (B, T, F) -> (B, kh*kw + 1, T*F).

    Row i*kw + j holds x[t + i - kh//2, f + j - kw//2] - shift (zero padding becomes
    -shift), the last row is ones. So a conv with weight w and bias b is
    [w, b + shift * sum(w)] @ patches, and the patches' second moments, taken about a value
    near their mean, lose no precision to cancellation. Differentiable in x (not in shift).
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


def patch_moments(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (k+1,) and covariance (k+1, k+1) of the patch columns over all positions.

    E[p p^T] - mean mean^T from one GEMM over the patches as they are (their last row of
    ones makes the last column of E[p p^T] the mean); they are shifted to near-zero mean
    (see `patches`), so the subtraction cancels few digits.
    """
    count = p.shape[0] * p.shape[2]
    second = torch.bmm(p, p.transpose(1, 2)).sum(0) / count
    mean = second[:, -1]
    return mean, second - torch.outer(mean, mean)


@dataclass
class _Branch:
    """Per-branch constants of one fused call (none of them differentiable)."""

    channel_mask: torch.Tensor | None  # (B, C): spatial dropout factors, 0 or 1/(1-p)
    element_mask: torch.Tensor | None  # (B, C, T*F) bool: elementwise dropout keep mask
    element_scale: float  # 1/(1-p) for the elementwise mask
    squeeze_weights: torch.Tensor | None  # (T*F,): weight of each position in SE's mean


@dataclass
class _Config:
    branches: list[_Branch]
    squeeze_excitation: bool
    squeeze_denominator: float  # frames * branches * features
    chunk: int
    features: int
    reverse: bool = False  # the output in reversed time order (see `projected`)


def _se_forward(
    s: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pre = torch.addmm(b1, s, w1.t())
    hidden = pre.clamp_min(0)
    scale = torch.sigmoid(torch.addmm(b2, hidden, w2.t()))
    return pre, hidden, scale


def _channel_masks(config: _Config, like: torch.Tensor) -> torch.Tensor | None:
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


class _FusedBranches(torch.autograd.Function):
    """relu(P_b^T W'_b^T) -> [dropout] -> SE -> per-(sample, channel) weighted channel sum.

    Inputs: config, projection weight w (C,), SE parameters (w1, b1, w2, b2 or Nones), then
    per branch the patches P_b (B, k_b+1, T*F) and folded weights W'_b (C, k_b+1).
    Output: (B, T, branches, F), the 1x1 projection of the SE-scaled concatenation before
    its bias, ReLU and (for the avgpool regulariser) the pooling.

    The activations (rows, T*F, C) exist a chunk of samples at a time: their SE sums and
    their contraction with weights[n, b, c] = w[c] * scale[n, c] * mask[n, b, c] are taken
    while they are in cache, and backward recomputes them from the patches.
    """

    @staticmethod
    def forward(ctx, config: _Config, w, w1, b1, w2, b2, *branch_tensors):  # noqa: ANN001
        nb = len(config.branches)
        ps, ws = branch_tensors[:nb], branch_tensors[nb:]
        batch, _, positions = ps[0].shape
        channels = ws[0].shape[0]
        se = config.squeeze_excitation
        masks = _channel_masks(config, w.expand(batch, channels))
        base = w.expand(batch, nb, channels) if masks is None else w * masks
        out = ps[0].new_empty(nb, batch, positions)  # each (branch, sample) row contiguous
        sums = ps[0].new_empty(batch, nb, channels) if se else None
        lib = _native_fusion_kernels(config, ps[0])
        ctx.signs = None
        if lib is not None:
            ctx.signs = _native_fused_forward(
                lib, config, ps, ws, base, masks, sums, out, (w1, b1, w2, b2),
                record_signs=any(ctx.needs_input_grad),
            )
        else:
            for start in range(0, batch, config.chunk):
                sl = slice(start, min(start + config.chunk, batch))
                acts = [
                    _activation(ps[b][sl], ws[b], config.branches[b], sl) for b in range(nb)
                ]
                weights = base[sl]
                if se:
                    for b in range(nb):
                        sums[sl, b] = _squeeze_sum(acts[b], config.branches[b])
                    part = sums[sl] if masks is None else sums[sl] * masks[sl]
                    s = part.sum(1) / config.squeeze_denominator
                    weights = weights * _se_forward(s, w1, b1, w2, b2)[2][:, None, :]
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
        config: _Config = ctx.config
        nb = len(config.branches)
        w, w1, b1, w2, b2, sums, *rest = ctx.saved_tensors
        ps, ws = rest[:nb], rest[nb:]
        batch, _, positions = ps[0].shape
        channels = ws[0].shape[0]
        se = config.squeeze_excitation
        need_p = [ctx.needs_input_grad[6 + b] for b in range(nb)]
        # (B, nb, T*F), branch-major like the activations
        grad_out = grad_out.permute(0, 2, 1, 3)
        if config.reverse:
            grad_out = grad_out.flip(2)
        grad_out = grad_out.reshape(batch, nb, positions)
        masks = _channel_masks(config, w.expand(batch, channels))
        weights = w.expand(batch, nb, channels) if masks is None else w * masks
        if se:
            part = sums if masks is None else sums * masks
            s = part.sum(1) / config.squeeze_denominator
            pre, hidden, scale = _se_forward(s, w1, b1, w2, b2)
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
            _native_slope_products(config, ps, grad_out, signs, firsts, seconds)
        else:
            for start in range(0, batch, config.chunk):
                sl = slice(start, min(start + config.chunk, batch))
                for b in range(nb):
                    _slope_products(
                        ps[b][sl], ws[b], config.branches[b], grad_out[sl, b], sl,
                        firsts[b][sl], seconds[b][sl] if se else None,
                    )
        # (B, nb, C); products and sums rather than einsum, whose per-sample matrix
        # products copied thousands of tiny operands
        grad_weights = torch.stack(
            [(first * wb.t()).sum(1) for first, wb in zip(firsts, ws, strict=True)], dim=1
        )
        wm = grad_weights if masks is None else grad_weights * masks
        grad_w = (wm * scale[:, None, :]).sum((0, 1)) if se else wm.sum((0, 1))
        grad_w1 = grad_b1 = grad_w2 = grad_b2 = grad_sums = None
        if se:
            grad_scale = (wm * w).sum(1)
            grad_logit = grad_scale * scale * (1 - scale)
            grad_w2, grad_b2 = grad_logit.t() @ hidden, grad_logit.sum(0)
            grad_pre = (grad_logit @ w2) * (pre > 0)
            grad_w1, grad_b1 = grad_pre.t() @ s, grad_pre.sum(0)
            grad_s = (grad_pre @ w1) / config.squeeze_denominator  # (B, C)
            # s = sum_b masks_b * sums_b / denominator
            grad_sums = grad_s[:, None, :] if masks is None else grad_s[:, None, :] * masks
            grad_sums = grad_sums.expand(batch, nb, channels)
        grad_ws = []
        for b in range(nb):
            gw = (weights[:, b, None, :] * firsts[b]).sum(0).t()
            if se:
                gw = gw + (grad_sums[:, b, None, :] * seconds[b]).sum(0).t()
            grad_ws.append(gw if ctx.needs_input_grad[6 + nb + b] else None)
        grad_ps = [None] * nb
        for b in range(nb):
            if need_p[b]:  # only when the input needs a gradient (never in training)
                grad_ps[b] = _patch_grad(
                    ps[b], ws[b], config.branches[b], grad_out[:, b], weights[:, b],
                    None if grad_sums is None else grad_sums[:, b],
                )
        return None, grad_w, grad_w1, grad_b1, grad_w2, grad_b2, *grad_ps, *grad_ws


def _native_fusion_kernels(config: _Config, like: torch.Tensor):  # noqa: ANN202
    """The C kernels for the forward chunks, when they apply (float32 on the CPU, no
    elementwise dropout), else None."""
    if like.dtype != torch.float32 or like.device.type != "cpu":
        return None
    if any(branch.element_mask is not None for branch in config.branches):
        return None
    return native.library()


def _native_fused_forward(  # noqa: ANN201
    lib, config: _Config, ps, ws, base, masks, sums, out, se_params, record_signs: bool  # noqa: ANN001
):
    """`_FusedBranches.forward`'s chunk loop with ser/models/native/tff.c: per chunk the
    pre-activations W' P of every branch, channels first (rows, C, T*F), then SE's sums and
    the weighted channel contraction of their ReLU, each one read of them. Where the
    kernels have AVX-512, also the signs of the pre-activations, one bit each, from which
    the backward takes its slope products (`_native_slope_products`); returns them per
    branch, (B, C rounded up to 4, ceil(T*F / 16)) int16, or None."""
    nb = len(config.branches)
    batch, _, positions = ps[0].shape
    channels = ws[0].shape[0]
    threads = native.threads()
    se = sums is not None
    chunk_sums = ps[0].new_empty(nb, config.chunk, channels) if se else None
    # one buffer per branch for every chunk: warm memory (and torch.matmul's broadcast of
    # the weight measured up to 9x slower than bmm on an expanded one)
    buffers = ps[0].new_empty(nb, min(config.chunk, batch), channels, positions)
    signs = None
    if record_signs and lib.tff_has_signs():  # only for a backward to come
        padded = -(-channels // 4) * 4
        signs = [
            torch.empty(batch, padded, -(-positions // 16), dtype=torch.int16) for _ in range(nb)
        ]
    for start in range(0, batch, config.chunk):
        stop = min(start + config.chunk, batch)
        rows = stop - start
        pre = [
            torch.bmm(ws[b].expand(rows, -1, -1), ps[b][start:stop], out=buffers[b, :rows])
            for b in range(nb)
        ]  # (rows, C, T*F) each
        weights = base[start:stop]
        if se:
            for b in range(nb):
                q = config.branches[b].squeeze_weights  # contiguous (T*F,) or None
                lib.tff_sums(
                    pre[b].data_ptr(), native.pointer(q),
                    chunk_sums[b].data_ptr(), rows * channels, positions, threads,
                )
            sums[start:stop] = chunk_sums[:, :rows].transpose(0, 1)
            part = sums[start:stop] if masks is None else sums[start:stop] * masks[start:stop]
            scale = _se_forward(part.sum(1) / config.squeeze_denominator, *se_params)[2]
            weights = weights * scale[:, None, :]
        weights = weights.transpose(0, 1).contiguous()  # (nb, rows, C); kept alive
        for b in range(nb):
            lib.tff_contract(
                pre[b].data_ptr(), weights[b].data_ptr(), out[b, start].data_ptr(),
                rows, channels, positions, positions,
                None if signs is None else signs[b][start].data_ptr(),
                0 if signs is None else signs[b].shape[1], threads,
            )
    return signs


def _native_slope_products(config: _Config, ps, grad_out, signs, firsts, seconds) -> None:  # noqa: ANN001
    """`_slope_products` for every branch and sample from the forward's ReLU signs
    (tff_slope_products in ser/models/native/tff.c): no recomputed pre-activations."""
    lib = native.library()
    nb = len(config.branches)
    batch, _, positions = ps[0].shape
    channels = firsts[0].shape[2]
    threads = native.threads()
    grad_out = grad_out.contiguous()  # (B, nb, T*F)
    for b in range(nb):
        p = ps[b].contiguous()
        q = config.branches[b].squeeze_weights
        second = seconds[b] if seconds is not None else None
        lib.tff_slope_products(
            p.data_ptr(), grad_out[:, b].data_ptr(), nb * positions, native.pointer(q),
            int(second is not None), signs[b].data_ptr(), firsts[b].data_ptr(),
            None if second is None else second.data_ptr(), batch, p.shape[1], channels,
            signs[b].shape[1], positions, threads,
        )


def _linear(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The folded conv p^T @ w^T: (rows, T*F, C), channels last (the gradient GEMM
    [g * P; P] @ slope measured 1.5x faster on this layout than on channels first)."""
    return torch.bmm(p.transpose(1, 2), w.t().expand(p.shape[0], -1, -1))


def _activation(p: torch.Tensor, w: torch.Tensor, branch: _Branch, sl: slice) -> torch.Tensor:
    """relu(p^T @ w^T) (with elementwise dropout applied), channels last: (rows, T*F, C)."""
    h = _linear(p, w).relu_()
    if branch.element_mask is not None:
        h.mul_(branch.element_mask[sl].transpose(1, 2)).mul_(branch.element_scale)
    return h


def _slope(p: torch.Tensor, w: torch.Tensor, branch: _Branch, sl: slice) -> torch.Tensor:
    """d act / d h: relu'(h) [* dropout factor], (rows, T*F, C)."""
    slope = _linear(p, w).gt_(0)  # in place, still float: 1 where relu passes
    if branch.element_mask is not None:
        slope.mul_(branch.element_mask[sl].transpose(1, 2)).mul_(branch.element_scale)
    return slope


def _slope_products(
    p: torch.Tensor,
    w: torch.Tensor,
    branch: _Branch,
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


def _patch_grad(p, w, branch, g, weights, grad_sums) -> torch.Tensor:  # noqa: ANN001
    """d loss / d patches (B, k+1, T*F), for an input that needs a gradient (tests)."""
    grad_h = torch.bmm(g[:, :, None], weights[:, None, :])  # (B, T*F, C)
    if grad_sums is not None:
        sq = branch.squeeze_weights
        grad_h += grad_sums[:, None, :] * (1.0 if sq is None else sq[:, None])
    grad_h *= _slope(p, w, branch, slice(None))
    return torch.bmm(grad_h, w.expand(p.shape[0], -1, -1)).transpose(1, 2)


def _squeeze_sum(h: torch.Tensor, branch: _Branch) -> torch.Tensor:
    """(rows, C): the (position-weighted) sum over positions that SE's mean needs."""
    if branch.squeeze_weights is None:
        return h.sum(1)
    return torch.matmul(branch.squeeze_weights, h)


def use_reference(x: torch.Tensor) -> bool:
    """Whether to run the reference computation instead: when tracing or exporting (the
    exporters cannot record Python autograd Functions, and the reference graph has no
    batch-size dependent chunking), and on the meta device (shape and FLOP analysis,
    which should see the network's own convolutions)."""
    return (
        x.is_meta
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )


class _Patches:
    """One kernel shape's shifted patches of an input (see `patches`), and their moments
    computed once however many blocks read them."""

    def __init__(self, x: torch.Tensor, kernel: tuple[int, int], shift: torch.Tensor) -> None:
        self.shift = shift
        self.values = patches(x, kernel, shift)
        self._moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._moments is None:
            self._moments = patch_moments(self.values)
        return self._moments


def shared_patches(
    fusions: Sequence[FastTimeFrequencyFusion], x: torch.Tensor
) -> dict[tuple[int, int], _Patches]:
    """The patches of x for every kernel shape of the given fusion blocks."""
    shift = x.detach().mean()
    kernels = {branch.conv.kernel_size for fusion in fusions for branch in fusion.branches}
    return {kernel: _Patches(x, kernel, shift) for kernel in sorted(kernels)}


def _reversed(branch: _Branch, frames: int) -> _Branch:
    """A branch's per-position constants for the input reversed in time."""

    def flip(values: torch.Tensor | None) -> torch.Tensor | None:
        if values is None:
            return None
        shaped = values.reshape(*values.shape[:-1], frames, -1)
        return shaped.flip(-2).reshape(values.shape)

    return _Branch(
        branch.channel_mask, flip(branch.element_mask), branch.element_scale,
        flip(branch.squeeze_weights),
    )


@register_fusion_implementation("fast")
class FastTimeFrequencyFusion(TimeFrequencyFusion):
    """The reference TFF block's function, computed by `_FusedBranches` (see module docstring)."""

    def __init__(self, *args: Any, chunk: int = DEFAULT_CHUNK, **kwargs: Any) -> None:
        # The reference's constructor arguments, so configs and state dicts carry over.
        super().__init__(*args, **kwargs)
        self.chunk = chunk
        self._squeeze_weight_cache: dict[tuple, torch.Tensor] = {}

    def _folded_weights(
        self, branch: FusionBranch, patch: _Patches, reverse: bool
    ) -> torch.Tensor:
        """[W', b'] (C, k+1): the conv followed by BatchNorm as one linear map of the patches.

        With `reverse` the patches are those of the input reversed in time, and the kernel
        is flipped in time to match (see `projected`)."""
        conv, norm = branch.conv, branch.norm
        kernel = (conv.weight.flip(2) if reverse else conv.weight).flatten(1)
        bias = conv.bias + patch.shift * kernel.sum(1)  # the patches are shifted by `shift`
        weight = torch.cat([kernel, bias[:, None]], dim=1)  # (C, k+1)
        if norm.training or norm.running_mean is None:  # batch statistics, as BatchNorm
            mean_p, covariance = patch.moments()
            mean = weight @ mean_p
            var = ((weight @ covariance) * weight).sum(1)
            if norm.training and norm.track_running_stats and norm.running_mean is not None:
                count = patch.values.shape[0] * patch.values.shape[2]
                _update_running_stats(norm, mean.detach(), var.detach(), count)
        else:
            mean, var = norm.running_mean, norm.running_var
        inv_std = torch.rsqrt(var + norm.eps)
        gain = inv_std if norm.weight is None else norm.weight * inv_std
        shift = -mean * gain if norm.bias is None else norm.bias - mean * gain
        folded = weight * gain[:, None]
        # The bias column: b * gain + shift (the ones row of the patches multiplies it).
        return torch.cat([folded[:, :-1], (folded[:, -1] + shift)[:, None]], dim=1)

    def _branch_constants(
        self, branch: FusionBranch, batch: int, frames: int, device, dtype  # noqa: ANN001
    ) -> _Branch:
        reg = branch.regularizer
        channel_mask = element_mask = squeeze_weights = None
        element_scale = 1.0
        channels = branch.conv.out_channels
        features = self.input_dim
        if isinstance(reg, nn.Dropout2d):
            if reg.training and reg.p > 0:
                channel_mask = torch.empty(batch, channels, device=device, dtype=dtype)
                if reg.p >= 1:
                    channel_mask.zero_()
                else:
                    channel_mask.bernoulli_(1 - reg.p).div_(1 - reg.p)
        elif isinstance(reg, nn.Dropout):
            if reg.training and reg.p > 0:
                element_mask = torch.empty(
                    batch, channels, frames * features, device=device, dtype=torch.bool
                )
                if reg.p >= 1:
                    element_mask.zero_()
                else:
                    element_mask.bernoulli_(1 - reg.p)
                    element_scale = 1.0 / (1 - reg.p)
        elif isinstance(reg, SamePaddingAveragePool2d):
            squeeze_weights = self._pool_squeeze_weights(frames, features, device, dtype)
        elif not isinstance(reg, nn.Identity):
            raise TypeError(f"fast TFF cannot compute regulariser {type(reg).__name__}")
        return _Branch(channel_mask, element_mask, element_scale, squeeze_weights)

    def _pool_squeeze_weights(self, frames: int, features: int, device, dtype) -> torch.Tensor:  # noqa: ANN001
        """q with sum(pool(r)) = sum(q * r): each position's total weight in the pooled map.

        Pooled (i, j) averages the r x c real entries of x[i:i+2, j:j+2] (r = 1 on the last
        row, else 2; likewise c), so q factorises into a frame and a feature profile."""
        key = (frames, features, str(device), dtype)
        cached = self._squeeze_weight_cache.get(key)
        if cached is None:

            def profile(n: int) -> torch.Tensor:
                inverse = torch.full((n,), 0.5, device=device, dtype=dtype)
                inverse[-1] = 1.0  # the last window holds one real entry along this axis
                total = inverse.clone()
                total[1:] += inverse[:-1]  # position t is in windows t - 1 and t
                return total

            cached = torch.outer(profile(frames), profile(features)).flatten()
            self._squeeze_weight_cache[key] = cached
        return cached

    def projected(
        self,
        x: torch.Tensor,
        shared: dict[tuple[int, int], _Patches] | None = None,
        reverse: bool = False,
    ) -> torch.Tensor:
        """The fusion output without the appended input: (batch, frames, branches * F).

        `shared` holds the patches of x by kernel shape (`shared_patches`), for blocks that
        read the same input. With `reverse`, the result is that of x reversed in time,
        computed from x's own patches: 'same' convolution commutes with reversal when the
        kernel is flipped in time, and everything after the convolutions acts per position
        or averages over positions, so only the dropout masks and the pooling's weights are
        reversed to match, and the output at the end. MS-SENet's backward stream shares
        its forward stream's patches this way.
        """
        batch, frames, features = x.shape
        if shared is None:
            shared = shared_patches([self], x)
        ps = [shared[branch.conv.kernel_size] for branch in self.branches]
        ws = [
            self._folded_weights(branch, patch, reverse)
            for branch, patch in zip(self.branches, ps, strict=True)
        ]
        consts = [
            self._branch_constants(branch, batch, frames, x.device, x.dtype)
            for branch in self.branches
        ]
        if reverse:
            consts = [_reversed(c, frames) for c in consts]
        se = self.squeeze_excitation
        config = _Config(
            branches=consts,
            squeeze_excitation=se is not None,
            squeeze_denominator=float(frames * features * len(self.branches)),
            chunk=self.chunk,
            features=features,
            reverse=reverse,
        )
        w = self.projection.weight.flatten()
        out = _FusedBranches.apply(
            config,
            w,
            se.squeeze.weight if se is not None else None,
            se.squeeze.bias if se is not None else None,
            se.excite.weight if se is not None else None,
            se.excite.bias if se is not None else None,
            *(patch.values for patch in ps),
            *ws,
        )  # (B, T, nb, F), in the stream's own time order
        if consts[0].squeeze_weights is not None:  # avgpool: pool each branch's map
            out = SamePaddingAveragePool2d()(out.transpose(1, 2)).transpose(1, 2)
        return (out + self.projection.bias).relu_().reshape(batch, frames, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_reference(x):
            return super().forward(x)
        return torch.cat([self.projected(x), x], 2)


def _update_running_stats(
    norm: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor, count: int
) -> None:
    """What BatchNorm's train-mode forward does to its buffers (unbiased running variance)."""
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            factor = 1.0 / float(norm.num_batches_tracked)
        else:
            factor = norm.momentum
        unbiased = var * (count / max(count - 1, 1))
        norm.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        norm.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


# ---------------------------------------------------------------------------------------
# The TAB chain in (groups, batch, frames, channels) layout with a hand-written backward.
# A group is one stream with its own weights: MS-SENet's two reading directions run as two
# groups of every operation, which halves the number of (small) operations.


def _channel_mask(dropout: nn.Module, batch: int, channels: int, like: torch.Tensor):  # noqa: ANN202
    """Dropout1d's per-(sample, channel) factors (B, 1, C), drawn exactly as the reference
    draws them, or None when dropout is inactive."""
    p = dropout.p
    if not dropout.training or p == 0:
        return None
    mask = like.new_empty(batch, channels)
    if p >= 1:
        return mask.zero_()[:, None, :]
    return mask.bernoulli_(1 - p).div_(1 - p)[:, None, :]


def _stack_masks(masks: Sequence[torch.Tensor | None], like: torch.Tensor):  # noqa: ANN202
    """(G, B, 1, C) from one mask (or None) per group; None when no group has one."""
    if all(m is None for m in masks):
        return None
    batch, channels = like.shape[1], like.shape[3]
    ones = like.new_ones(batch, 1, channels)
    return torch.stack([ones if m is None else m for m in masks])


def _causal_conv_input_grad(gz: torch.Tensor, scale, offset, w1, w0, d: int) -> torch.Tensor:  # noqa: ANN001
    """d loss / d x of the causal conv, given its output gradient as scale * (gz + offset)
    (per group and output channel; see `_normalise_backward`): a fresh tensor."""
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


def _causal_conv_param_grads(
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


@dataclass
class _NormGroup:
    """The BatchNorms at one position of a block, one per group, and their common mode."""

    norms: list[nn.modules.batchnorm._BatchNorm]
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


def _norm_group(norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> _NormGroup:
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
    return _NormGroup(list(norms), batch_stats, update)


def _normalise(z: torch.Tensor, group: _NormGroup, bias, gamma, beta, mask):  # noqa: ANN001, ANN202
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
            for i, norm in enumerate(group.norms):
                _update_running_stats(norm, mean[i] + bias[i], var[i], count)
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


def _normalise_backward(gu: torch.Tensor, centred: torch.Tensor, inv_std, gamma, batch_stats: bool):  # noqa: ANN001, ANN202
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


class _TemporalAwareBlockFunction(torch.autograd.Function):
    """TABs on (G, B, T, C), each group with its own (stacked) parameters; returns the
    blocks' outputs and their time means (G, B, C)."""

    @staticmethod
    def forward(ctx, x, wa, ba, ga, bea, wb, bb, gb, beb, d, norms, masks):  # noqa: ANN001
        m1, m2 = masks
        wa1, wa0 = wa[..., 1], wa[..., 0]
        wb1, wb0 = wb[..., 1], wb[..., 0]
        zc1 = causal_conv(x, wa1.transpose(1, 2), wa0.transpose(1, 2), d)
        a1, inv1 = _normalise(zc1, norms[0], ba, ga, bea, m1)
        zc2 = causal_conv(a1, wb1.transpose(1, 2), wb0.transpose(1, 2), d)
        h, inv2 = _normalise(zc2, norms[1], bb, gb, beb, m2)
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
        gz2, scale2, offset2, g_gb, g_beb = _normalise_backward(
            gu2, zc2, inv2, gb, ctx.batch_stats[1]
        )
        g_wb, g_bb = _causal_conv_param_grads(gz2, scale2, offset2, a1, d)
        ga1 = _causal_conv_input_grad(gz2, scale2, offset2, wb[..., 1], wb[..., 0], d)
        gu1 = torch.ops.aten.threshold_backward.grad_input(ga1, a1, 0.0, grad_input=ga1)
        if m1 is not None:
            gu1.mul_(m1)
        gz1, scale1, offset1, g_ga, g_bea = _normalise_backward(
            gu1, zc1, inv1, ga, ctx.batch_stats[0]
        )
        g_wa, g_ba = _causal_conv_param_grads(gz1, scale1, offset1, x, d)
        gx = _causal_conv_input_grad(gz1, scale1, offset1, wa[..., 1], wa[..., 0], d)
        # plus the direct path out = x * s
        if g is not None:
            gx.addcmul_(g, s)
        if g_mean is not None:
            gx.addcmul_(s, g_mean)
        grads = (gx, g_wa, g_ba, g_ga, g_bea, g_wb, g_bb, g_gb, g_beb)
        needed = ctx.needs_input_grad
        return (*(gr if needed[i] else None for i, gr in enumerate(grads)), None, None, None)


def _stack_parameter(modules: Sequence[nn.Module], name: str) -> torch.Tensor | None:
    values = [getattr(module, name) for module in modules]
    if values[0] is None:
        return None
    if len(values) == 1:
        return values[0].unsqueeze(0)
    return torch.stack(values)


def draw_block_masks(blocks: Sequence[TemporalAwareBlock], batch: int, like: torch.Tensor):  # noqa: ANN201
    """Each block's two dropout masks, drawn in the reference's order."""
    masks = []
    for block in blocks:
        channels = block.first_conv.out_channels
        first = _channel_mask(block.channel_dropout, batch, channels, like)
        second = _channel_mask(block.channel_dropout, batch, channels, like)
        masks.append((first, second))
    return masks


def temporal_aware_blocks(
    blocks: Sequence[TemporalAwareBlock],
    x: torch.Tensor,
    masks: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One TAB per group applied to x (G, B, T, C), with the groups' dropout masks; returns
    the outputs (G, B, T, C) and their time means (G, B, C)."""
    for block in blocks:
        if block.first_conv.kernel_size != (2,) or block.second_conv.kernel_size != (2,):
            raise ValueError("the fast TAB computes kernel size 2 only")
    dilations = {block.first_conv.dilation[0] for block in blocks}
    if len(dilations) != 1:
        raise ValueError("grouped TABs need equal dilations")
    convs_a = [block.first_conv for block in blocks]
    convs_b = [block.second_conv for block in blocks]
    norms_a = [block.first_norm for block in blocks]
    norms_b = [block.second_norm for block in blocks]
    function = _TemporalAwareBlockFunction
    if x.dtype == torch.float32 and x.device.type == "cpu" and native.library() is not None:
        function = NativeTemporalAwareBlockFunction
    return function.apply(
        x.contiguous(),
        _stack_parameter(convs_a, "weight"),
        _stack_parameter(convs_a, "bias"),
        _stack_parameter(norms_a, "weight"),
        _stack_parameter(norms_a, "bias"),
        _stack_parameter(convs_b, "weight"),
        _stack_parameter(convs_b, "bias"),
        _stack_parameter(norms_b, "weight"),
        _stack_parameter(norms_b, "bias"),
        dilations.pop(),
        (_norm_group(norms_a), _norm_group(norms_b)),
        (_stack_masks([m[0] for m in masks], x), _stack_masks([m[1] for m in masks], x)),
    )


def _pointwise(
    stream: DirectionalStream,
    x: torch.Tensor,
    shared: dict[tuple[int, int], _Patches] | None = None,
    reverse: bool = False,
) -> torch.Tensor:
    """The stream's [fusion ->] pointwise conv on x (B, T, F), or on x reversed in time
    with `reverse`: (B, T, filters) in the stream's own time order.

    With the fast fusion, the conv reads the projected branches and the raw input as two
    GEMMs instead of their concatenation; `shared` passes patches of x computed once for
    several streams (see `FastTimeFrequencyFusion.projected`)."""
    batch, frames, features = x.shape
    weight = stream.pointwise.weight[:, :, 0]  # (filters, width)
    bias = stream.pointwise.bias
    fusion = stream.fusion
    if isinstance(fusion, FastTimeFrequencyFusion):
        projected = fusion.projected(x, shared, reverse).reshape(batch * frames, -1)
        if reverse:
            x = torch.flip(x, dims=[1])
        width = projected.shape[1]
        h = torch.addmm(bias, projected, weight[:, :width].t())
        h = h.addmm_(x.reshape(batch * frames, features), weight[:, width:].t())
    else:
        if reverse:
            x = torch.flip(x, dims=[1])
        if fusion is not None:
            x = fusion(x)
        h = torch.addmm(bias, x.reshape(batch * frames, -1), weight.t())
    return h.view(batch, frames, -1)


class FastDirectionalStream(DirectionalStream):
    """DirectionalStream computed in (batch, frames, channels) layout with fused TABs.

    Same parameters and output as the reference: (batch, num_blocks, filters, frames), here
    a transposed view of a (batch, num_blocks, frames, filters) tensor. For MSSENet.embed it
    also computes both reading directions at once (`bidirectional_level_means`).
    """

    @property
    def summarises_levels(self) -> bool:  # type: ignore[override]
        return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())

    def _chain(
        self, streams: Sequence[DirectionalStream], x: torch.Tensor, reverse: Sequence[bool]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Fusion, pointwise conv and TABs of several streams on x (each reading it in
        time order or reversed), run as groups. Fast fusion blocks share x's patches."""
        fusions = [s.fusion for s in streams if isinstance(s.fusion, FastTimeFrequencyFusion)]
        shared = shared_patches(fusions, x) if fusions else None
        starts, masks = [], []
        for stream, backwards in zip(streams, reverse, strict=True):
            # The reference's random-number order: a stream's TFF masks, then its TABs'.
            starts.append(_pointwise(stream, x, shared, backwards))
            masks.append(draw_block_masks(stream.blocks, x.shape[0], x))
        del shared
        h = torch.stack(starts) if len(starts) > 1 else starts[0].unsqueeze(0)
        levels, means = [], []
        for j, blocks in enumerate(zip(*(stream.blocks for stream in streams), strict=True)):
            h, mean = temporal_aware_blocks(blocks, h, [m[j] for m in masks])
            levels.append(h)
            means.append(mean)
        return levels, means

    def bidirectional_level_means(
        self, other: DirectionalStream, x: torch.Tensor
    ) -> torch.Tensor:
        """Sum of this stream's level means on x and `other`'s on x reversed in time:
        (batch, num_blocks, filters), both streams computed as two groups."""
        if use_reference(x):
            return self(x).mean(dim=3) + other(torch.flip(x, dims=[1])).mean(dim=3)
        _, means = self._chain([self, other], x, [False, True])
        return torch.stack([mean.sum(0) for mean in means], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_reference(x):
            return super().forward(x)
        levels, _ = self._chain([self], x, [False])
        return torch.stack([level[0] for level in levels], dim=1).transpose(2, 3)


STREAM_IMPLEMENTATIONS["fast"] = FastDirectionalStream

