"""Fused CPU kernels of the fast implementation, compiled from C on first use.

The C kernels (tab.c, tff.c) do the fast implementation's elementwise work in a few passes
over memory instead of one per PyTorch operation; their OpenMP threads are PyTorch's own.
build.py compiles them once per machine and hands out only a build that matches its
sha256; ops.py is the one typed boundary to them (``torch.ops.ser_native.*``).

Settings (environment): ``SER_NATIVE=0`` disables the kernels; ``CC`` names the compiler
(default ``cc``); ``SER_NATIVE_CACHE`` the cache folder (default
``$XDG_CACHE_HOME/ser-native`` or ``~/.cache/ser-native``). Why and how:
docs/performance.md, section "The C kernels".
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
