"""Compiling the fused CPU kernels (tab.c, tff.c) and finding a verified build.

Compiled once per machine with the system C compiler (``CC``, default ``cc``) into a cache
folder (``SER_NATIVE_CACHE``, or ``$XDG_CACHE_HOME/ser-native`` / ``~/.cache/ser-native``),
one build per kind of CPU. A build is handed out only while its bytes match the sha256
beside it (else rebuilt); builds run under a lock on the folder and are renamed into
place. A folder others can write to is not used (the PyTorch formulation runs). Loading
the library is ops.py's business. Names, verification, locking and the folder rule:
docs/performance.md, section "Building the kernels".
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ser.private_folder import private_folder_problem, user_cache_folder

SOURCES = (Path(__file__).with_name("tab.c"), Path(__file__).with_name("tff.c"))
FLAGS = (
    "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC"
)

def enabled() -> bool:
    """Whether the kernels may be used (``SER_NATIVE=0`` turns them off)."""
    return os.environ.get("SER_NATIVE", "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_dir() -> Path:
    """The folder of verified builds."""
    explicit = os.environ.get("SER_NATIVE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return user_cache_folder("ser-native")


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
    against damage; against someone else writing to the cache folder, `build` accepts
    only a folder that its user alone can write to (ser.private_folder).
    """
    try:
        stored = digest_path(path).read_text(encoding="ascii").strip()
        return len(stored) == 64 and _sha256(path) == stored
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder (flock on the folder itself, no lock file:
    `filelock` would need one, and this private folder holds only verified builds).

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
    problem = private_folder_problem(directory)
    if problem is not None:  # its libraries are loaded as code: refused, not trusted
        raise RuntimeError(
            f"the kernel cache folder {directory} {problem}; its libraries would be loaded as "
            f"code: make it yours alone (chmod 700) or set SER_NATIVE_CACHE to such a folder"
        )
    if verified(target):
        return target
    try:
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
