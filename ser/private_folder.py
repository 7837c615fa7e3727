"""Folders whose files are loaded as code must be writable by their user alone.

Two caches hold code this framework loads: the fused CPU kernels (ser/models/native) and
the kernels `torch.compile` generates (ser/training/compile_cache.py). Whoever can write
into such a folder can put code there that the next run executes, so the folder must be
a real folder (not a link), belong to the user and be writable by nobody else.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def user_cache_folder(name: str) -> Path:
    """`$XDG_CACHE_HOME/<name>`, or `~/.cache/<name>`: a cache in the user's own home."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / name


def private_folder_problem(path: Path) -> str | None:
    """Create `path` (mode 0700) if missing; None if only this user can write to it, else
    what is wrong with it, in words that follow "the folder ...: "."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = path.lstat()
    except OSError as error:
        return f"cannot be created ({error.strerror})"
    if stat.S_ISLNK(status.st_mode) or not stat.S_ISDIR(status.st_mode):
        return "is a link or a file, not a folder"
    if status.st_uid != os.getuid():
        return f"belongs to another user (uid {status.st_uid})"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"may be written by other users (mode {stat.S_IMODE(status.st_mode):o})"
    return None
