"""Comparing the fast implementation with the reference: inputs, paired models, tolerances.

Used by tests/models/test_fast.py and test_native.py; the method is described in
test_fast.py's docstring.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ser.models import MSSENet

BATCH, FRAMES, FEATURES = 8, 40, 39
TOLERANCE = 1e-4

# MS-SENet's ablation switches, one at a time (also tests/models/test_networks.py).
SWITCHES = {
    "default": {},
    "square_kernel": {"kernel_sizes": ((3, 3),)},
    "no_se": {"squeeze_excitation": False},
    "se_reduction_3": {"se_reduction": 3},
    "avgpool": {"branch_regularizer": "avgpool"},
    "dropout": {"branch_regularizer": "dropout"},
    "no_regularizer": {"branch_regularizer": "none"},
}
ABLATIONS = {
    **SWITCHES,
    "no_se_dropout": {"squeeze_excitation": False, "branch_regularizer": "dropout"},
    "no_se_avgpool": {"squeeze_excitation": False, "branch_regularizer": "avgpool"},
    "no_fusion": {"time_frequency_fusion": False},
}


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201
    """Small tensors: one thread is fastest, and immune to a busy machine's scheduling.
    (Autouse in the test modules that import it.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def features(batch: int = BATCH, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    """MFCC-like input: a large negative c0, decaying spreads, a global offset."""
    generator = torch.Generator().manual_seed(seed)
    spread = torch.linspace(40.0, 2.0, FEATURES)
    offset = torch.zeros(FEATURES)
    offset[0], offset[1] = -300.0, 80.0
    return torch.randn(batch, frames, FEATURES, generator=generator) * spread + offset + 5.0


def pair(factory, **overrides):  # noqa: ANN001, ANN201
    """(reference, fast) with the same weights."""
    torch.manual_seed(0)
    reference = factory(implementation="reference", **overrides)
    fast = factory(implementation="fast", **overrides)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def run(model: nn.Module, x: torch.Tensor, train: bool, seed: int = 5):  # noqa: ANN201
    """Output and gradients of (input, every parameter) for a fixed output gradient."""
    model.train(train)
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)  # the same dropout masks in both implementations
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out)
    names = ["input"] + [name for name, _ in model.named_parameters()]
    grads = torch.autograd.grad((out * weights).sum(), [x, *model.parameters()])
    return out.detach(), dict(zip(names, grads, strict=True))


def cancelled_bias(name: str, train: bool) -> str | None:
    """For a conv bias whose gradient BatchNorm's batch statistics cancel: its weight."""
    if train and name.endswith(("conv.bias", "first_conv.bias", "second_conv.bias")):
        return name[: -len("bias")] + "weight"
    return None


def compare_fp32(reference: nn.Module, fast: nn.Module, x: torch.Tensor, train: bool) -> None:
    exact = copy.deepcopy(reference).double()
    ref_out, ref_grads = run(reference, x, train)
    fast_out, fast_grads = run(fast, x, train)
    exact_out, exact_grads = run(exact, x.double(), train)

    def check(name: str, got: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor) -> None:
        error = relative_error(got, ref)
        if error > TOLERANCE:  # then the fp32 reference is itself that far from exact
            reference_error = relative_error(ref, truth)
            assert reference_error > TOLERANCE / 2, (name, error)
            assert relative_error(got, truth) <= max(TOLERANCE, 1.5 * reference_error), (
                name, error
            )

    check("output", fast_out, ref_out, exact_out)
    for name, ref in ref_grads.items():
        weight = cancelled_bias(name, train)
        if weight is not None:
            scale = ref_grads[weight].norm()
            assert (fast_grads[name] - ref).norm() <= TOLERANCE * scale, name
            continue
        check(name, fast_grads[name], ref, exact_grads[name])
    for (name, a), b in zip(fast.named_buffers(), reference.buffers(), strict=True):
        if a.dtype.is_floating_point:
            assert relative_error(a, b) <= 1e-5, name
        else:
            assert torch.equal(a, b), name


def compare_fp64(reference: nn.Module, fast: nn.Module, x: torch.Tensor, train: bool) -> None:
    """In float64 the two agree to rounding: the same function, not an approximation."""
    reference, fast = copy.deepcopy(reference).double(), copy.deepcopy(fast).double()
    ref_out, ref_grads = run(reference, x.double(), train)
    fast_out, fast_grads = run(fast, x.double(), train)
    assert relative_error(fast_out, ref_out) <= 1e-10
    for name, ref in ref_grads.items():
        weight = cancelled_bias(name, train)
        if weight is not None:
            assert (fast_grads[name] - ref).norm() <= 1e-10 * ref_grads[weight].norm(), name
        else:
            assert relative_error(fast_grads[name], ref) <= 1e-9, name
    for a, b in zip(fast.buffers(), reference.buffers(), strict=True):
        if a.dtype.is_floating_point:
            assert relative_error(a, b) <= 1e-12


def mssenet(**overrides):  # noqa: ANN003, ANN201
    settings = {"num_classes": 7, "num_blocks": 3, **overrides}
    return MSSENet(**settings)
