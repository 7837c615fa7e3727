"""The fused branches' chunk loop and backward products with the C kernels (tff.c).

Used by `FusedBranches` (fused_branches.py) for float32 CPU tensors without elementwise
dropout when the kernels are available; the same arithmetic as the PyTorch formulation in
branches.py, with one read of each chunk's pre-activations for SE's sums and one for the
weighted channel contraction, and (AVX-512 builds) the ReLU's signs recorded for the
backward instead of recomputing the pre-activations.
"""

from __future__ import annotations

import torch

from ser.models.fast.branches import FusedConfig, se_forward
from ser.models.native import available, has_signs, ops


def native_applies(config: FusedConfig, like: torch.Tensor) -> bool:
    """Whether the C kernels compute the forward chunks: float32 on the CPU, no
    elementwise dropout, and the kernels available."""
    if like.dtype != torch.float32 or like.device.type != "cpu":
        return False
    if any(branch.element_mask is not None for branch in config.branches):
        return False
    return available()


def native_fused_forward(  # noqa: ANN201
    config: FusedConfig, ps, ws, base, masks, sums, out, se_params, record_signs: bool  # noqa: ANN001
):
    """`FusedBranches.forward`'s chunk loop with the kernels: per chunk the pre-activations
    W' P of every branch, channels first (rows, C, T*F), then SE's sums and the weighted
    channel contraction of their ReLU, each one read of them. Where the kernels have
    AVX-512, also the signs of the pre-activations, one bit each, from which the backward
    takes its slope products (`native_slope_products`); returns them per branch,
    (B, C rounded up to 4, ceil(T*F / 16)) int16, or None."""
    nb = len(config.branches)
    batch, _, positions = ps[0].shape
    channels = ws[0].shape[1]
    se = sums is not None
    chunk_sums = ps[0].new_empty(nb, config.chunk, channels) if se else None
    # one buffer per branch for every chunk: warm memory (and torch.matmul's broadcast of
    # the weight measured up to 9x slower than bmm on an expanded one)
    buffers = ps[0].new_empty(nb, min(config.chunk, batch), channels, positions)
    signs = None
    if record_signs and has_signs():  # only for a backward to come
        padded = -(-channels // 4) * 4
        signs = [
            torch.empty(batch, padded, -(-positions // 16), dtype=torch.int16) for _ in range(nb)
        ]
    for segment, sl in config.chunks(batch):
        rows = sl.stop - sl.start
        pre = [
            torch.bmm(ws[b][segment].expand(rows, -1, -1), ps[b][sl], out=buffers[b, :rows])
            for b in range(nb)
        ]  # (rows, C, T*F) each
        weights = base[sl]
        if se:
            for b in range(nb):
                ops.tff_sums(pre[b], config.branches[b].squeeze_weights, chunk_sums[b, :rows])
            sums[sl] = chunk_sums[:, :rows].transpose(0, 1)
            part = sums[sl] if masks is None else sums[sl] * masks[sl]
            params = [None if p is None else p[segment] for p in se_params]
            scale = se_forward(part.sum(1) / config.squeeze_denominator, *params)[2]
            weights = weights * scale[:, None, :]
        weights = weights.transpose(0, 1).contiguous()  # (nb, rows, C); kept alive
        for b in range(nb):
            ops.tff_contract(
                pre[b], weights[b], out[b, sl],
                None if signs is None else signs[b][sl],
            )
    return signs


def native_slope_products(config: FusedConfig, ps, grad_out, signs, firsts, seconds) -> None:  # noqa: ANN001
    """`slope_products` (branches.py) for every branch and sample from the forward's ReLU
    signs: no recomputed pre-activations."""
    grad_out = grad_out.contiguous()  # (B, nb, T*F): each branch's rows are contiguous
    for b in range(len(config.branches)):
        ops.tff_slope_products(
            ps[b].contiguous(), grad_out[:, b], config.branches[b].squeeze_weights, signs[b],
            firsts[b], seconds[b] if seconds is not None else None,
        )
