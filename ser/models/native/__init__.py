"""Fused CPU kernels of the fast implementation, compiled from C on first use.

PyTorch runs each elementwise operation as its own pass over memory; a Temporal-Aware
Block of the fast implementation made some twenty such passes over (2, 64, 188, 39)
tensors, and these, not its matrix products, set its speed. The C kernels here (tab.c,
tff.c) do the same arithmetic in a few passes (see the comments in the .c files); their
OpenMP threads are PyTorch's own (the same libgomp), so nothing oversubscribes.

- build.py compiles them once per machine with the system C compiler into a cache folder
  and hands out a build only when its bytes match the sha256 stored beside it;
- ops.py loads that build and is the one typed boundary to it: PyTorch operators
  (``torch.ops.ser_native.*``) with schemas, fake implementations and every tensor
  checked (device, dtype, contiguity, shape) before C sees its address.

Settings (environment): ``SER_NATIVE=0`` disables the kernels; ``CC`` names the compiler
(default ``cc``); ``SER_NATIVE_CACHE`` the cache folder (default
``$XDG_CACHE_HOME/ser-native`` or ``~/.cache/ser-native``).
"""

from ser.models.native.build import build, cache_dir, digest_path, enabled, verified
from ser.models.native.loader import available, has_signs, library_path, reset

__all__ = [
    "available",
    "build",
    "cache_dir",
    "digest_path",
    "enabled",
    "has_signs",
    "library_path",
    "reset",
    "verified",
]
