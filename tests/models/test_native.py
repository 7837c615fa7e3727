"""The fused C kernels (ser/models/native): used by default, equal to the PyTorch
formulation and the reference, and a clean fallback when they cannot be built."""

from __future__ import annotations

import copy
import os
import random
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from ser.models import MSSENet, native
from ser.models.fast import branches_native, stream
from ser.models.fast.tab import TemporalAwareBlockFunction
from ser.models.fast.tab_native import NativeTemporalAwareBlockFunction
from ser.models.native import ops
from tests.helpers.config import ROOT
from tests.helpers.implementations import compare_fp32, features, mssenet, pair, relative_error

needs_kernels = pytest.mark.skipif(
    not native.enabled() or not native.available(), reason="no C compiler for the kernels"
)


@pytest.fixture
def native_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SER_NATIVE", "0")
    native.reset()
    yield
    monkeypatch.delenv("SER_NATIVE")
    native.reset()


def tab_functions(model: torch.nn.Module, x: torch.Tensor) -> set[str]:
    """Names of the autograd nodes of the TABs in the graph of model(x)."""
    seen, names, stack = set(), set(), [model(x).sum().grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "TemporalAwareBlock" in type(node).__name__:
            names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@needs_kernels
def test_kernels_are_the_default_for_float32_on_cpu() -> None:
    model = MSSENet(num_classes=4, num_blocks=2, implementation="fast").train()
    x = features()
    assert tab_functions(model, x) == {"NativeTemporalAwareBlockFunctionBackward"}
    # float64 (and other devices) use the PyTorch formulation
    assert tab_functions(copy.deepcopy(model).double(), x.double()) == {
        "TemporalAwareBlockFunctionBackward"
    }


def test_fallback_without_kernels_matches_reference(native_off: None) -> None:
    assert not native.available()
    for overrides in ({}, {"branch_regularizer": "dropout"}):
        reference, fast = pair(mssenet, **overrides)
        assert tab_functions(copy.deepcopy(fast), features()) == {
            "TemporalAwareBlockFunctionBackward"
        }
        for train in (False, True):
            compare_fp32(reference, fast, features(), train)


@needs_kernels
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_kernels_and_fallback_agree(train: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Output and every gradient of the two TAB computations, for blocks with dilations
    below, across and beyond half the sequence (12 frames; dilations 1 to 16)."""
    torch.manual_seed(0)
    model = MSSENet(num_classes=5, num_blocks=5, implementation="fast").train(train)
    x = features(batch=6, frames=12)
    weights = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))

    def run(function: type) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        monkeypatch.setattr(stream, "NativeTemporalAwareBlockFunction", function)
        copied = copy.deepcopy(model)
        inputs = x.clone().requires_grad_()
        torch.manual_seed(1)  # the same dropout masks
        out = copied(inputs)
        grads = torch.autograd.grad((out * weights).sum(), [inputs, *copied.parameters()])
        names = ["input"] + [name for name, _ in copied.named_parameters()]
        return out.detach(), dict(zip(names, grads, strict=True))

    native_out, native_grads = run(NativeTemporalAwareBlockFunction)
    torch_out, torch_grads = run(TemporalAwareBlockFunction)
    assert relative_error(native_out, torch_out) <= 1e-5
    for name, expected in torch_grads.items():
        got = native_grads[name]
        if train and name.endswith("_conv.bias"):  # BatchNorm cancels it: rounding noise
            scale = torch_grads[name[: -len("bias")] + "weight"].norm()
            assert (got - expected).norm() <= 1e-4 * scale, name
        else:
            assert relative_error(got, expected) <= 1e-4, name


@needs_kernels
@pytest.mark.parametrize(
    "overrides",
    [{}, {"branch_regularizer": "avgpool"}, {"squeeze_excitation": False},
     {"branch_regularizer": "none", "kernel_sizes": ((3, 3), (5, 1))}],
    ids=["default", "avgpool", "no_se", "other_kernels"],
)
def test_whole_model_with_and_without_kernels(
    overrides: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fusion block's kernels (SE sums, contraction, ReLU signs and the backward's
    slope products from them) and the TAB's, against the PyTorch formulation: outputs
    and every gradient, train mode, positions and channels no multiple of 16 or 4."""
    torch.manual_seed(0)
    model = mssenet(implementation="fast", **overrides).train()
    x = features(batch=6, frames=13)
    weights = torch.randn(6, 7, generator=torch.Generator().manual_seed(2))

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        copied = copy.deepcopy(model)
        torch.manual_seed(1)
        out = copied(x)
        grads = torch.autograd.grad((out * weights).sum(), list(copied.parameters()))
        names = [name for name, _ in copied.named_parameters()]
        return out.detach(), dict(zip(names, grads, strict=True))

    with_kernels = run()
    if native.has_signs():  # also the path of CPUs without AVX-512
        with monkeypatch.context() as patch:
            patch.setattr(branches_native, "has_signs", lambda: False)
            without_signs = run()
        assert relative_error(without_signs[0], with_kernels[0]) <= 1e-5
        for name, got in without_signs[1].items():
            expected = with_kernels[1][name]
            if not name.endswith("conv.bias"):
                assert relative_error(got, expected) <= 1e-4, name
    os.environ["SER_NATIVE"] = "0"
    native.reset()
    try:
        without = run()
    finally:
        del os.environ["SER_NATIVE"]
        native.reset()
    assert relative_error(with_kernels[0], without[0]) <= 1e-5
    for name, expected in without[1].items():
        got = with_kernels[1][name]
        if name.endswith("conv.bias"):  # BatchNorm cancels it: rounding noise
            scale = without[1][name[: -len("bias")] + "weight"].norm()
            assert (got - expected).norm() <= 1e-4 * scale, name
        else:
            assert relative_error(got, expected) <= 1e-4, name


@needs_kernels
def test_gate_kernel_sigmoid_and_mean() -> None:
    """out = x * sigmoid(relu(A z + S)) and its time mean, over the whole range of the
    polynomial exp (including past its cut-off at 17.5, and negative inputs)."""
    groups, batch, frames, channels = 1, 2, 500, 7
    z = torch.linspace(-5, 40, groups * batch * frames * channels).reshape(
        groups, batch, frames, channels
    )
    x = torch.randn_like(z)
    coefficients = torch.stack([  # A, S, M: identity BatchNorm, no dropout
        torch.ones(groups, batch, channels), torch.zeros(groups, batch, channels),
        torch.ones(groups, batch, channels),
    ])
    out, mean = torch.empty_like(z), torch.empty(groups, batch, channels)
    ops.tab_gate(z, x, coefficients, out, mean)
    expected = x * torch.sigmoid(z.double().relu()).float()
    assert torch.allclose(out, expected, rtol=3e-7, atol=1e-7)
    assert torch.allclose(mean, expected.mean(2), rtol=1e-5, atol=1e-6)


@needs_kernels
def test_stats_kernel_sums_in_double() -> None:
    z = torch.randn(2, 3000, 5) * 10 + 1000  # a large mean: float sums would lose digits
    stats = torch.empty(2, 2, 5, dtype=torch.float64)
    ops.tab_stats(z, stats)
    exact = z.double()
    assert torch.allclose(stats[0], exact.sum(1), rtol=1e-12)
    assert torch.allclose(stats[1], exact.square().sum(1), rtol=1e-12)


@needs_kernels
def test_build_is_cached_per_source_and_machine(tmp_path) -> None:  # noqa: ANN001
    first = native.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp
    # no partial files left: the library and its digest only
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, first.name + ".sha256"]


def test_a_missing_compiler_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path  # noqa: ANN001
) -> None:
    monkeypatch.setenv("SER_NATIVE", "1")  # even where the suite runs with them off
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SER_NATIVE_CACHE", str(tmp_path / "cache"))
    native.reset()
    try:
        with pytest.warns(RuntimeWarning, match="no-such-cc"):
            assert not native.available()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not native.available()  # said once
        reference, fast = pair(mssenet)
        compare_fp32(reference, fast, features(), train=True)
    finally:
        native.reset()


def test_a_cache_folder_others_may_write_is_not_loaded_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Whoever can write to the cache folder could put a library there that the next run
    loads: such a folder is refused (a warning names it) and the PyTorch formulation runs."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    compiler = tmp_path / "cc"  # would record a compile; none may happen
    compiler.write_text(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo fake; exit 0; fi\n"
        f"touch {tmp_path / 'compiled'}; exit 1\n"
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    with pytest.raises(RuntimeError, match=rf"kernel cache folder {shared} may be written by other users \(mode 777\); .* \(chmod 700\) or set SER_NATIVE_CACHE"):
        native.build(shared)
    monkeypatch.setenv("SER_NATIVE", "1")
    monkeypatch.setenv("SER_NATIVE_CACHE", str(shared))
    native.reset()
    try:
        with pytest.warns(RuntimeWarning, match=rf"{shared} may be written by other users"):
            assert not native.available()
    finally:
        native.reset()
    assert not any(shared.iterdir()) and not (tmp_path / "compiled").exists()
    # A new folder is made the user's alone (then the fake compiler fails).
    fresh = tmp_path / "fresh" / "ser-native"
    with pytest.raises(RuntimeError, match="compiling the fused kernels failed"):
        native.build(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700 and (tmp_path / "compiled").exists()


def test_a_failing_compile_names_the_command(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    compiler = tmp_path / "cc"
    compiler.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo fake; exit 0; fi\n"
                        "echo 'error: something broke' >&2; exit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    with pytest.raises(RuntimeError, match="something broke") as error:
        native.build(tmp_path / "cache")
    assert str(compiler) in str(error.value)
    assert not any((tmp_path / "cache").iterdir())  # the partial output was removed


# Runs the kernels in a fresh process: a library that crashes the loader (SIGBUS on a
# truncated file) shows as a negative exit status instead of taking the test run down.
USE_KERNELS = """
import torch
from ser.models import native
from ser.models.native import ops
assert native.available(), "the kernels were not loaded"
z = torch.randn(2, 30, 5)
stats = torch.empty(2, 2, 5, dtype=torch.float64)
ops.tab_stats(z, stats)
assert torch.allclose(stats[0], z.double().sum(1)), "the kernels computed something else"
"""


def kernel_environment(cache: Path, **extra: str) -> dict[str, str]:
    return os.environ | {"SER_NATIVE": "1", "SER_NATIVE_CACHE": str(cache), **extra}


def use_kernels(cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", USE_KERNELS], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=kernel_environment(cache),
    )


def damage(library: Path, kind: str) -> bytes:
    data = library.read_bytes()
    if kind == "truncated":
        damaged = data[: len(data) // 2]
    elif kind == "altered":  # the same length, some bytes in the middle flipped
        middle = len(data) // 2
        damaged = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
    else:  # another file under the expected name
        damaged = bytes(random.Random(0).getrandbits(8) for _ in range(len(data)))
    library.write_bytes(damaged)
    return damaged


@needs_kernels
@pytest.mark.parametrize("kind", ["truncated", "altered", "other_content"])
def test_a_damaged_library_in_the_cache_is_rebuilt_not_loaded(kind: str, tmp_path: Path) -> None:
    library = native.build(tmp_path)
    damaged = damage(library, kind)
    result = use_kernels(tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert library.read_bytes() != damaged, "the damaged library was kept"
    assert native.verified(library)
    assert sorted(p.name for p in tmp_path.iterdir()) == [library.name, library.name + ".sha256"]


@needs_kernels
def test_processes_starting_together_compile_once(tmp_path: Path) -> None:
    log = tmp_path / "compiles.log"
    compiler = tmp_path / "cc"
    compiler.write_text(
        f"#!/bin/sh\nif [ \"$1\" != --version ]; then echo compile >> {log}; fi\n"
        f"exec {os.environ.get('CC', 'cc')} \"$@\"\n"
    )
    compiler.chmod(0o755)
    cache = tmp_path / "cache"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", USE_KERNELS], cwd=ROOT, stderr=subprocess.PIPE, text=True,
            env=kernel_environment(cache, CC=str(compiler)),
        )
        for _ in range(3)
    ]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], errors
    assert log.read_text().splitlines() == ["compile"]
    (library,) = cache.glob("*.so")
    assert native.verified(library)


@needs_kernels
def test_the_operators_check_every_tensor_before_c_sees_it() -> None:
    """The typed boundary: a wrong dtype, a non-contiguous tensor, a shape that does not
    fit the others or a missing gate argument is a ValueError naming the operator and
    the argument, never an out-of-bounds read in C."""
    z = torch.randn(2, 3, 10, 5)
    coefficients = torch.ones(3, 2, 3, 5)
    coefficients[1] = 0  # A = 1, S = 0: relu(z)
    out = torch.empty_like(z)
    ops.tab_norm_relu(z, coefficients, out)
    assert torch.equal(out, z.relu())
    cases = {
        "z must be a contiguous torch.float32": (z.double(), coefficients, out),
        "not contiguous": (z.transpose(2, 3).contiguous().transpose(2, 3), coefficients, out),
        r"coefficients must have shape \(3, 2, 3, 5\)": (z, coefficients[:, :, :2].contiguous(), out),
        r"out must have shape": (z, coefficients, out[:, :, :5].contiguous()),
    }
    for message, arguments in cases.items():
        with pytest.raises(ValueError, match=f"ser_native::tab_norm_relu: .*{message}"):
            ops.tab_norm_relu(*arguments)
    with pytest.raises(ValueError, match="stats must be a contiguous torch.float64"):
        ops.tab_stats(z, torch.empty(2, 2, 5))
    with pytest.raises(ValueError, match="x and grad_mean go together"):
        ops.tab_backward_sums(
            z, coefficients, torch.ones(4, 2, 5), z, z, None, torch.empty(2, 2, 5, dtype=torch.float64)
        )
    pre, weights = torch.randn(2, 5, 33), torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"signs must have shape \(2, 8, 3\)"):
        ops.tff_contract(pre, weights, torch.empty(2, 33), torch.empty(2, 8, 2, dtype=torch.int16))


def test_the_operators_have_schemas_and_fake_implementations() -> None:
    """Registered whether or not the kernels can be built: the schema says what each
    writes, and on the meta device (shape analysis, tracing) they run without C."""
    schema = torch.ops.ser_native.tab_gate.default._schema
    written = [argument.name for argument in schema.arguments if argument.alias_info is not None
               and argument.alias_info.is_write]
    assert written == ["out", "mean"]
    for name in ops.SCHEMAS:
        assert hasattr(torch.ops.ser_native, name)
    with torch.device("meta"):
        z, x = torch.empty(2, 3, 10, 5), torch.empty(2, 3, 10, 5)
        out, mean = torch.empty_like(z), torch.empty(2, 3, 5)
        ops.tab_gate(z, x, torch.empty(3, 2, 3, 5), out, mean)
    assert out.is_meta and mean.shape == (2, 3, 5)
