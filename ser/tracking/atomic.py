"""Atomic file writes (a reader, or a crash at any moment, sees the old file or the new
one) and an exclusive lock between processes that prepare the same file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from ser.private_folder import user_cache_folder

log = logging.getLogger(__name__)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened exclusively, in the same folder so the rename is atomic
    # (mkstemp would also work but makes the file private, 0600).
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> None:
    """Delete the temporaries a killed `atomic_write` of `path` left beside it.

    For the one writer of `path` (a fold's files, written under that fold's lock) as it
    starts: no other process is writing them then.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write_json(data: Any, path: str | os.PathLike[str]) -> None:
    """Write `data` as indented JSON, atomically."""
    atomic_write(path, lambda stream: stream.write(json.dumps(data, indent=2).encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save` `obj`, atomically."""
    import torch

    atomic_write(path, lambda stream: torch.save(obj, stream))


def lock_file(path: str | os.PathLike[str]) -> Path:
    """The lock file that guards `path`: in the user's own cache folder
    (`$XDG_CACHE_HOME/ser/locks`), named by a digest of the resolved path, so that no lock
    file lies beside the user's data; one small file per guarded path, reused."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    return user_cache_folder("ser") / "locks" / f"{digest}.lock"


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (`filelock` on `lock_file(path)`) against other
    processes; the operating system releases it if its holder dies.

    `waiting` is logged once if another process holds the lock, before waiting for it.
    Processes that share the cache folder exclude each other (one machine; nodes sharing
    a home folder); elsewhere the writes this guards stay atomic, only done twice.
    """
    lock = lock_file(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(lock)
    try:
        held.acquire(timeout=0)
    except Timeout:
        if waiting:
            log.info(waiting)
        held.acquire()
    try:
        yield
    finally:
        held.release()
