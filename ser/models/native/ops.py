"""The one typed boundary of the C kernels: PyTorch operators ``torch.ops.ser_native.*``.

Each kernel of tab.c and tff.c is an operator with a schema (``Tensor(a!)``: what it
writes), a CPU implementation that checks every tensor (device, dtype, contiguity, shape)
before its address reaches C and raises ValueError naming the operator and the argument,
and a fake (meta) implementation. They carry no autograd formulas: they are pieces of the
hand-written backward passes in ser/models/fast. Nothing else calls the library; callers
check `available()` first. Details: docs/performance.md, section "The kernels' operators".
"""

from __future__ import annotations

import torch

from ser.models.native.loader import kernels as _kernels

NAMESPACE = "ser_native"

def _threads() -> int:
    return max(1, torch.get_num_threads())


# ---- argument checks: the only way a tensor's address reaches C ----------------------


def _address(op: str, name: str, tensor: torch.Tensor, dtype: torch.dtype, shape: tuple) -> int:
    """The data address of a contiguous CPU tensor of `dtype` and `shape`."""
    if not (tensor.is_cpu and tensor.dtype == dtype and tensor.is_contiguous()):
        raise ValueError(
            f"{NAMESPACE}::{op}: {name} must be a contiguous {dtype} CPU tensor, got "
            f"{tensor.dtype} on {tensor.device}"
            + ("" if tensor.is_contiguous() else " (not contiguous)")
        )
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"{NAMESPACE}::{op}: {name} must have shape {shape}, got {tuple(tensor.shape)}"
        )
    return tensor.data_ptr()


def _optional(op: str, name: str, tensor: torch.Tensor | None, dtype: torch.dtype, shape: tuple):  # noqa: ANN202
    return None if tensor is None else _address(op, name, tensor, dtype, shape)


def _dims(op: str, name: str, tensor: torch.Tensor, ndim: int) -> tuple[int, ...]:
    if tensor.dim() != ndim:
        raise ValueError(f"{NAMESPACE}::{op}: {name} must have {ndim} dimensions, got {tensor.dim()}")
    return tuple(tensor.shape)


def _require(op: str, condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"{NAMESPACE}::{op}: {message}")


def _part(tensor: torch.Tensor) -> int:
    """Bytes between the parts along dimension 0 of a checked tensor (A, S, M; ...)."""
    return tensor.numel() // tensor.shape[0] * tensor.element_size()


F32, F64, I16 = torch.float32, torch.float64, torch.int16


# ---- the Temporal-Aware Block's kernels (tab.c) ---------------------------------------
# Layout (G, B, T, C): groups, samples, frames, channels. `coefficients` (3, G, B, C) holds
# the folded BatchNorm + dropout A, S and the dropout factors M; `factors` (4, G, C) the
# mean, variance, 1/std and gain of each BatchNorm; `stats` (2, G, C) float64 the sums of
# z and z^2; `sums` (2, G, C) float64 the backward's sums; `backward_factors` (5, G, C)
# k1, k2 and the gradients of gamma, beta and the conv bias.


def _tab_stats(z: torch.Tensor, stats: torch.Tensor) -> None:
    op = "tab_stats"
    _require(op, z.dim() >= 2, "z must be (G, ..., C)")
    groups, channels = z.shape[0], z.shape[-1]
    rows = z.numel() // max(groups * channels, 1)
    z_at = _address(op, "z", z, F32, tuple(z.shape))
    at = _address(op, "stats", stats, F64, (2, groups, channels))
    if _kernels().tab_stats(z_at, groups, rows, channels, at, at + _part(stats), _threads()):
        raise MemoryError("tab_stats could not allocate its partial sums")


def _tab_norm_relu(z: torch.Tensor, coefficients: torch.Tensor, out: torch.Tensor) -> None:
    op = "tab_norm_relu"
    groups, batch, frames, channels = _dims(op, "z", z, 4)
    coefficient = _address(op, "coefficients", coefficients, F32, (3, groups, batch, channels))
    step = _part(coefficients)
    _kernels().tab_norm_relu(
        _address(op, "z", z, F32, tuple(z.shape)), coefficient, coefficient + step,
        _address(op, "out", out, F32, tuple(z.shape)),
        groups * batch, frames, channels, _threads(),
    )


def _tab_gate(
    z: torch.Tensor, x: torch.Tensor, coefficients: torch.Tensor, out: torch.Tensor,
    mean: torch.Tensor,
) -> None:
    op = "tab_gate"
    groups, batch, frames, channels = _dims(op, "z", z, 4)
    coefficient = _address(op, "coefficients", coefficients, F32, (3, groups, batch, channels))
    step = _part(coefficients)
    _kernels().tab_gate(
        _address(op, "z", z, F32, tuple(z.shape)), _address(op, "x", x, F32, tuple(z.shape)),
        coefficient, coefficient + step, _address(op, "out", out, F32, tuple(z.shape)),
        _address(op, "mean", mean, F32, (groups, batch, channels)),
        groups * batch, frames, channels, _threads(),
    )


def _tab_coefficients(
    count: int, stats: torch.Tensor | None, mean_in: torch.Tensor | None,
    var_in: torch.Tensor | None, gamma: torch.Tensor | None, beta: torch.Tensor | None,
    eps: torch.Tensor, mask: torch.Tensor | None, factors: torch.Tensor,
    coefficients: torch.Tensor,
) -> None:
    op = "tab_coefficients"
    _, groups, batch, channels = _dims(op, "coefficients", coefficients, 4)
    per_channel = (groups, channels)
    batch_stats = stats is not None
    _require(op, count > 0, f"count must be positive, got {count}")
    _require(
        op, batch_stats != (mean_in is not None and var_in is not None),
        "give either stats (batch statistics) or mean_in and var_in (running statistics)",
    )
    stat = _optional(op, "stats", stats, F64, (2, *per_channel))
    factor = _address(op, "factors", factors, F32, (4, *per_channel))
    coefficient = _address(op, "coefficients", coefficients, F32, (3, groups, batch, channels))
    step, factor_step = _part(coefficients), _part(factors)
    _kernels().tab_coefficients(
        int(batch_stats), stat, None if stat is None else stat + _part(stats), count,
        _optional(op, "mean_in", mean_in, F32, per_channel),
        _optional(op, "var_in", var_in, F32, per_channel),
        _optional(op, "gamma", gamma, F32, per_channel),
        _optional(op, "beta", beta, F32, per_channel),
        _address(op, "eps", eps, F32, (groups,)),
        _optional(op, "mask", mask, F32, (groups, batch, channels)),
        *(factor + i * factor_step for i in range(4)),
        *(coefficient + i * step for i in range(3)),
        groups, batch, channels,
    )


def _tab_backward_inputs(
    op: str, z: torch.Tensor, coefficients: torch.Tensor, factors: torch.Tensor,
    grad: torch.Tensor | None, x: torch.Tensor | None, grad_mean: torch.Tensor | None,
) -> tuple[tuple[int, int, int, int], list]:
    """The checked addresses tab_backward reads in both passes: gin, gmean, x, z, A, S, M,
    mu, istd; with x (the gate of the block's second half) grad_mean is required."""
    shape = _dims(op, "z", z, 4)
    groups, batch, _, channels = shape
    gate = x is not None
    _require(op, gate == (grad_mean is not None), "x and grad_mean go together (the gate)")
    coefficient = _address(op, "coefficients", coefficients, F32, (3, groups, batch, channels))
    factor = _address(op, "factors", factors, F32, (4, groups, channels))
    step, factor_step = _part(coefficients), _part(factors)
    return shape, [
        _optional(op, "grad", grad, F32, shape),
        _optional(op, "grad_mean", grad_mean, F32, (groups, batch, channels)),
        _optional(op, "x", x, F32, shape),
        _address(op, "z", z, F32, shape),
        coefficient, coefficient + step, coefficient + 2 * step,
        factor, factor + 2 * factor_step,  # the mean and 1/std
    ]


def _tab_backward_sums(
    z: torch.Tensor, coefficients: torch.Tensor, factors: torch.Tensor,
    grad: torch.Tensor | None, x: torch.Tensor | None, grad_mean: torch.Tensor | None,
    sums: torch.Tensor,
) -> None:
    op = "tab_backward_sums"
    _require(op, grad is not None or x is not None, "grad is required without the gate")
    shape, reads = _tab_backward_inputs(op, z, coefficients, factors, grad, x, grad_mean)
    groups, _, _, channels = shape
    at = _address(op, "sums", sums, F64, (2, groups, channels))
    if _kernels().tab_backward(
        0, int(x is not None), *reads, None, None, None, None, None, at, at + _part(sums),
        *shape, _threads(),
    ):
        raise MemoryError("tab_backward could not allocate its partial sums")


def _tab_backward_factors(
    count: int, sums: torch.Tensor, stats: torch.Tensor | None, factors: torch.Tensor,
    backward_factors: torch.Tensor,
) -> None:
    op = "tab_backward_factors"
    _, groups, channels = _dims(op, "factors", factors, 3)
    _require(op, count > 0, f"count must be positive, got {count}")
    sum_at = _address(op, "sums", sums, F64, (2, groups, channels))
    stat = _optional(op, "stats", stats, F64, (2, groups, channels))
    factor = _address(op, "factors", factors, F32, (4, groups, channels))
    out = _address(op, "backward_factors", backward_factors, F32, (5, groups, channels))
    step = _part(factors)
    _kernels().tab_backward_factors(
        int(stats is not None), sum_at, sum_at + _part(sums), stat, count,
        factor, factor + 2 * step, factor + 3 * step,  # the mean, 1/std and gain
        *(out + i * step for i in range(5)), groups * channels,
    )


def _tab_backward_grad(
    z: torch.Tensor, coefficients: torch.Tensor, factors: torch.Tensor,
    backward_factors: torch.Tensor, grad: torch.Tensor | None, x: torch.Tensor | None,
    grad_mean: torch.Tensor | None, grad_z: torch.Tensor, grad_direct: torch.Tensor | None,
) -> None:
    op = "tab_backward_grad"
    gate = x is not None
    _require(op, gate == (grad_direct is not None), "x and grad_direct go together (the gate)")
    shape, reads = _tab_backward_inputs(op, z, coefficients, factors, grad, x, grad_mean)
    groups, _, _, channels = shape
    gz = _address(op, "grad_z", grad_z, F32, shape)
    if grad is None and not gate:  # the incoming gradient is grad_z's, replaced in place
        reads[0] = gz
    factor, step = factors.data_ptr(), _part(factors)
    out = _address(op, "backward_factors", backward_factors, F32, (5, groups, channels))
    _kernels().tab_backward(
        1, int(gate), *reads, factor + 3 * step, out, out + step, gz,
        _optional(op, "grad_direct", grad_direct, F32, shape), None, None, *shape, _threads(),
    )


# ---- the fusion block's kernels (tff.c) -----------------------------------------------
# `pre` (R, C, P): a chunk's pre-activations, channels first, P = frames * features;
# `signs` (R, Cpad, ceil(P / 16)) int16: one bit per pre-activation, Cpad = C rounded up to 4.


def _signs_shape(rows: int, channels: int, positions: int) -> tuple[int, int, int]:
    padded = -(-channels // 4) * 4
    return (rows, padded, -(-positions // 16))


def _tff_sums(pre: torch.Tensor, weights: torch.Tensor | None, sums: torch.Tensor) -> None:
    op = "tff_sums"
    rows, channels, positions = _dims(op, "pre", pre, 3)
    _kernels().tff_sums(
        _address(op, "pre", pre, F32, (rows, channels, positions)),
        _optional(op, "weights", weights, F32, (positions,)),
        _address(op, "sums", sums, F32, (rows, channels)), rows * channels, positions,
        _threads(),
    )


def _tff_contract(
    pre: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, signs: torch.Tensor | None
) -> None:
    op = "tff_contract"
    rows, channels, positions = _dims(op, "pre", pre, 3)
    signs_shape = _signs_shape(rows, channels, positions)
    _kernels().tff_contract(
        _address(op, "pre", pre, F32, (rows, channels, positions)),
        _address(op, "weights", weights, F32, (rows, channels)),
        _address(op, "out", out, F32, (rows, positions)), rows, channels, positions, positions,
        _optional(op, "signs", signs, I16, signs_shape), signs_shape[1], _threads(),
    )


def _tff_slope_products(
    patches: torch.Tensor, grad: torch.Tensor, weights: torch.Tensor | None,
    signs: torch.Tensor, first: torch.Tensor, second: torch.Tensor | None,
) -> None:
    op = "tff_slope_products"
    rows, k1, positions = _dims(op, "patches", patches, 3)
    channels = _dims(op, "first", first, 3)[2]
    _require(op, k1 % 2 == 0, f"the kernel pairs patch rows: expected an even count, got {k1}")
    _require(op, bool(_kernels().tff_has_signs()), "this build records no signs (no AVX-512)")
    # grad: (R, P) rows, each contiguous, at any distance (a branch's slice of all branches)
    _require(
        op, grad.is_cpu and grad.dtype == F32 and grad.dim() == 2
        and tuple(grad.shape) == (rows, positions) and grad.stride(1) == 1
        and grad.stride(0) >= positions,
        f"grad must be a float32 CPU tensor ({rows}, {positions}) with contiguous rows, "
        f"got {grad.dtype} {tuple(grad.shape)} strides {grad.stride()} on {grad.device}",
    )
    signs_shape = _signs_shape(rows, channels, positions)
    _kernels().tff_slope_products(
        _address(op, "patches", patches, F32, (rows, k1, positions)), grad.data_ptr(),
        grad.stride(0), _optional(op, "weights", weights, F32, (positions,)),
        int(second is not None), _address(op, "signs", signs, I16, signs_shape),
        _address(op, "first", first, F32, (rows, k1, channels)),
        _optional(op, "second", second, F32, (rows, k1, channels)),
        rows, k1, channels, signs_shape[1], positions, _threads(),
    )


SCHEMAS = {
    "tab_stats": ("(Tensor z, Tensor(a!) stats) -> ()", _tab_stats),
    "tab_norm_relu": ("(Tensor z, Tensor coefficients, Tensor(a!) out) -> ()", _tab_norm_relu),
    "tab_gate": (
        "(Tensor z, Tensor x, Tensor coefficients, Tensor(a!) out, Tensor(b!) mean) -> ()",
        _tab_gate,
    ),
    "tab_coefficients": (
        "(int count, Tensor? stats, Tensor? mean_in, Tensor? var_in, Tensor? gamma, "
        "Tensor? beta, Tensor eps, Tensor? mask, Tensor(a!) factors, "
        "Tensor(b!) coefficients) -> ()",
        _tab_coefficients,
    ),
    "tab_backward_sums": (
        "(Tensor z, Tensor coefficients, Tensor factors, Tensor? grad, Tensor? x, "
        "Tensor? grad_mean, Tensor(a!) sums) -> ()",
        _tab_backward_sums,
    ),
    "tab_backward_factors": (
        "(int count, Tensor sums, Tensor? stats, Tensor factors, "
        "Tensor(a!) backward_factors) -> ()",
        _tab_backward_factors,
    ),
    "tab_backward_grad": (
        "(Tensor z, Tensor coefficients, Tensor factors, Tensor backward_factors, "
        "Tensor? grad, Tensor? x, Tensor? grad_mean, Tensor(a!) grad_z, "
        "Tensor(b!)? grad_direct) -> ()",
        _tab_backward_grad,
    ),
    "tff_sums": ("(Tensor pre, Tensor? weights, Tensor(a!) sums) -> ()", _tff_sums),
    "tff_contract": (
        "(Tensor pre, Tensor weights, Tensor(a!) out, Tensor(b!)? signs) -> ()", _tff_contract
    ),
    "tff_slope_products": (
        "(Tensor patches, Tensor grad, Tensor? weights, Tensor signs, Tensor(a!) first, "
        "Tensor(b!)? second) -> ()",
        _tff_slope_products,
    ),
}


def _fake(*args: object, **kwargs: object) -> None:
    """Every operator writes into tensors it is given and returns nothing: nothing to do
    on the meta device or under tracing."""


_library = torch.library.Library(NAMESPACE, "DEF")
for _name, (_schema, _implementation) in SCHEMAS.items():
    _library.define(_name + _schema)
    _library.impl(_name, _implementation, "CPU")
    torch.library.register_fake(f"{NAMESPACE}::{_name}", _fake, lib=_library)

# The operators, as the callers use them (the resolved overloads: the fastest call).
tab_stats = torch.ops.ser_native.tab_stats.default
tab_norm_relu = torch.ops.ser_native.tab_norm_relu.default
tab_gate = torch.ops.ser_native.tab_gate.default
tab_coefficients = torch.ops.ser_native.tab_coefficients.default
tab_backward_sums = torch.ops.ser_native.tab_backward_sums.default
tab_backward_factors = torch.ops.ser_native.tab_backward_factors.default
tab_backward_grad = torch.ops.ser_native.tab_backward_grad.default
tff_sums = torch.ops.ser_native.tff_sums.default
tff_contract = torch.ops.ser_native.tff_contract.default
tff_slope_products = torch.ops.ser_native.tff_slope_products.default
