"""Fused CPU kernels of the fast implementation, compiled from C on first use.

PyTorch runs each elementwise operation as its own pass over memory; a Temporal-Aware
Block of the fast implementation made some twenty such passes over (2, 64, 188, 39)
tensors, and these, not its matrix products, set its speed. The C kernels here do the
same arithmetic in a few passes (see the comments in the .c files). They are compiled
once per machine with the system C compiler into a cache folder and loaded with ctypes;
their OpenMP threads are PyTorch's own (the same libgomp), so nothing oversubscribes.

Without a C compiler, or with ``SER_NATIVE=0`` in the environment, `library()` returns
None and the fast implementation uses its PyTorch formulation instead: same results
(tests compare both with the reference), slower. A compiler failure is reported once as
a warning that names the compiler and its message.

Settings (environment): ``SER_NATIVE=0`` disables the kernels; ``CC`` names the compiler
(default ``cc``); ``SER_NATIVE_CACHE`` the cache folder (default
``$XDG_CACHE_HOME/ser-native`` or ``~/.cache/ser-native``). The file name of a build
hashes the sources, the compiler's version, the flags and the CPU's feature flags, so a
home folder shared by different machines (a cluster) keeps one build per kind of CPU.

Each build is stored with its sha256 beside it (``<name>.so.sha256``) and is loaded only
if its bytes still match: a truncated or altered library (the dynamic loader would map it
and fault, SIGBUS) is rebuilt instead. Builds happen under a lock on the cache folder and
are written under temporary names and renamed, so concurrent processes neither compile
twice nor see a half-written file.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

SOURCES = (Path(__file__).with_name("tab.c"), Path(__file__).with_name("tff.c"))
FLAGS = (
    "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC"
)

_lock = threading.Lock()
_state: dict[str, object] = {}

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_int = ctypes.c_int
SIGNATURES = {
    "tab_stats": (_int, [_p, _i64, _i64, _i64, _p, _p, _int]),
    "tab_norm_relu": (None, [_p, _p, _p, _p, _i64, _i64, _i64, _int]),
    "tab_gate": (None, [_p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _int]),
    "tab_coefficients": (
        None, [_int, _p, _p, _i64] + [_p] * 13 + [_i64, _i64, _i64]
    ),
    "tab_backward_factors": (None, [_int, _p, _p, _p, _i64] + [_p] * 8 + [_i64]),
    "tff_has_signs": (_int, []),
    "tff_slope_products": (
        None, [_p, _p, _i64, _p, _int, _p, _p, _p, _i64, _i64, _i64, _i64, _i64, _int]
    ),
    "tff_sums": (None, [_p, _p, _p, _i64, _i64, _int]),
    "tff_contract": (None, [_p, _p, _p, _i64, _i64, _i64, _i64, _p, _i64, _int]),
    "tab_backward": (
        _int,
        [_int, _int] + [_p] * 16 + [_i64, _i64, _i64, _i64, _int],
    ),
}


def enabled() -> bool:
    return os.environ.get("SER_NATIVE", "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_dir() -> Path:
    explicit = os.environ.get("SER_NATIVE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ser-native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def _build_key(compiler_version: str) -> str:
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    for part in (compiler_version, " ".join(FLAGS), platform.machine(), _cpu_flags()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


DIGEST_SUFFIX = ".sha256"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_path(library_path: Path) -> Path:
    """Where the sha256 of a built library is kept: beside it, ``<name>.so.sha256``."""
    return library_path.with_name(library_path.name + DIGEST_SUFFIX)


def verified(path: Path) -> bool:
    """Whether `path` is a complete build: its bytes hash to the digest stored beside it.

    A truncated file (which the dynamic loader maps and then faults on, SIGBUS), altered
    bytes, or any file that merely has the expected name fail this check. It guards
    against damage, not against someone who can write to the cache folder.
    """
    try:
        stored = digest_path(path).read_text(encoding="ascii").strip()
        return len(stored) == 64 and _sha256(path) == stored
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder (flock on the folder itself, no lock file).

    Concurrent processes (DDP ranks, sweep workers) then build one at a time: the first
    compiles, the others find its verified build.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: the temporary names and renames still keep builds whole
        yield
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def _publish(directory: Path, partial: Path, target: Path) -> None:
    """Move a fresh build into place: the digest beside it, each file by an atomic rename."""
    handle, digest_partial = tempfile.mkstemp(suffix=DIGEST_SUFFIX, dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="ascii") as stream:
            stream.write(_sha256(partial) + "\n")
        # The library first, then its digest: a reader between the two renames sees a
        # mismatch and waits for the lock, never a library it would trust wrongly.
        os.replace(partial, target)
        os.replace(digest_partial, digest_path(target))
    finally:
        Path(digest_partial).unlink(missing_ok=True)


def build(directory: Path | None = None) -> Path:
    """Compile the kernels (or find the verified cached build); raises RuntimeError on failure.

    A cached library whose bytes do not match its stored sha256 (truncated, altered, or
    left by an older version without a digest) is rebuilt.
    """
    compiler = _compiler()
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"no working C compiler {compiler!r} ({error})") from None
    directory = Path(directory) if directory is not None else cache_dir()
    target = directory / f"ser_kernels_{_build_key(version)}.so"
    if verified(target):
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _build_lock(directory):
            if verified(target):  # another process built it while this one waited
                return target
            _compile(compiler, directory, target)
    except OSError as error:
        raise RuntimeError(f"cannot write the kernel cache folder {directory}: {error}") from None
    return target


def _compile(compiler: str, directory: Path, target: Path) -> None:
    # Compile to a private name, then rename: no process ever sees a half-written file.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(handle)
    try:
        command = [compiler, *FLAGS, "-o", partial, *map(str, SOURCES), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise RuntimeError(
                f"compiling the fused kernels failed: {' '.join(command)}\n" + "\n".join(message)
            )
        _publish(directory, Path(partial), target)
    finally:
        Path(partial).unlink(missing_ok=True)


def _load(path: Path) -> ctypes.CDLL:
    torch.ones(1).sum()  # PyTorch's libgomp is loaded first, so the kernels share it
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None when disabled or unavailable (warned once)."""
    if not enabled():
        return None
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = _load(build())
            except (RuntimeError, OSError, AttributeError) as error:
                _state["lib"] = None
                warnings.warn(
                    f"Fused CPU kernels unavailable, using the slower PyTorch formulation "
                    f"of the fast implementation: {error}. Set SER_NATIVE=0 to silence this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return _state["lib"]  # type: ignore[return-value]


def reset() -> None:
    """Forget the loaded library (tests switch SER_NATIVE and CC)."""
    with _lock:
        _state.clear()


def pointer(tensor: torch.Tensor | None) -> int | None:
    """Address of a contiguous float32 CPU tensor's data (None stays None)."""
    if tensor is None:
        return None
    if not tensor.is_contiguous():
        raise ValueError("native kernels need contiguous tensors")
    return tensor.data_ptr()


def threads() -> int:
    return max(1, torch.get_num_threads())
