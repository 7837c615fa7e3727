"""Loading the verified build of the kernels, once per process; whether they are available.

Only ops.py calls the loaded library (through `kernels()`); everything else asks
`available()`. Without a C compiler, or with ``SER_NATIVE=0``, `available()` is False (a
compiler failure is warned once, naming the compiler and its message) and the fast
implementation uses its PyTorch formulation instead: same results, slower.
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from pathlib import Path

import torch

from ser.models.native.build import build, enabled

_p, _i64, _int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
# The C functions' prototypes (tab.c, tff.c): ctypes converts and checks each argument.
_PROTOTYPES = {
    "tab_stats": (_int, [_p, _i64, _i64, _i64, _p, _p, _int]),
    "tab_norm_relu": (None, [_p, _p, _p, _p, _i64, _i64, _i64, _int]),
    "tab_gate": (None, [_p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _int]),
    "tab_coefficients": (None, [_int, _p, _p, _i64] + [_p] * 13 + [_i64, _i64, _i64]),
    "tab_backward_factors": (None, [_int, _p, _p, _p, _i64] + [_p] * 8 + [_i64]),
    "tab_backward": (_int, [_int, _int] + [_p] * 16 + [_i64, _i64, _i64, _i64, _int]),
    "tff_has_signs": (_int, []),
    "tff_sums": (None, [_p, _p, _p, _i64, _i64, _int]),
    "tff_contract": (None, [_p, _p, _p, _i64, _i64, _i64, _i64, _p, _i64, _int]),
    "tff_slope_products": (
        None, [_p, _p, _i64, _p, _int, _p, _p, _p, _i64, _i64, _i64, _i64, _i64, _int]
    ),
}

_lock = threading.Lock()
_state: dict[str, object] = {}


def _load(path: Path) -> ctypes.CDLL:
    torch.ones(1).sum()  # PyTorch's libgomp is loaded first, so the kernels share it
    library = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _PROTOTYPES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    return library


def available() -> bool:
    """Whether the kernels are loaded (built or found verified on first call; a failure is
    warned once and the answer is then False)."""
    if not enabled():
        return False
    with _lock:
        if "library" not in _state:
            try:
                path = build()
                _state["library"] = _load(path)
                _state["path"] = path
            except (RuntimeError, OSError, AttributeError) as error:
                _state["library"] = None
                warnings.warn(
                    f"Fused CPU kernels unavailable, using the slower PyTorch formulation "
                    f"of the fast implementation: {error}. Set SER_NATIVE=0 to silence this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return _state["library"] is not None


def library_path() -> Path | None:
    """The verified library in use, or None (not loaded, disabled or unavailable)."""
    return _state.get("path") if available() else None  # type: ignore[return-value]


def reset() -> None:
    """Forget the loaded library (tests switch SER_NATIVE and CC)."""
    with _lock:
        _state.clear()


def has_signs() -> bool:
    """Whether the build records ReLU signs for `tff_slope_products` (AVX-512 builds)."""
    return bool(kernels().tff_has_signs())


def kernels() -> ctypes.CDLL:
    """The loaded library, for ops.py; RuntimeError when it is not available."""
    library = _state.get("library")
    if library is None:
        if not available():
            raise RuntimeError("the fused CPU kernels are not available (see the warning)")
        library = _state["library"]
    return library  # type: ignore[return-value]
