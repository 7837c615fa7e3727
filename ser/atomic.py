"""Atomic file writes: a reader, or a crash at any moment, sees the old file or the new one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


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


def atomic_write_json(data: Any, path: str | os.PathLike[str]) -> None:
    """Write `data` as indented JSON, atomically."""
    atomic_write(path, lambda stream: stream.write(json.dumps(data, indent=2).encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save` `obj`, atomically."""
    import torch

    atomic_write(path, lambda stream: torch.save(obj, stream))
