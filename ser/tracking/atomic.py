"""Atomic file writes (a reader, or a crash at any moment, sees the old file or the new
one) and an exclusive lock between processes that prepare the same file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

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


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on the file `path` against other processes.

    `waiting` is logged once if another process holds the lock, before waiting for it.
    The lock file exists only while the lock is held, so no lock files pile up beside
    what they guard; the operating system releases the lock if its holder dies. Without
    advisory locks (Windows) this does not lock; the writes it guards stay atomic.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.info(waiting)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        # The previous holder removes the file before releasing it; if that happened
        # after this process opened it, the lock is on a file nobody else sees: retry.
        opened = os.fstat(descriptor)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
            break
        os.close(descriptor)
    try:
        yield
    finally:
        os.unlink(path)  # before the release, so that the next holder starts a fresh file
        os.close(descriptor)
