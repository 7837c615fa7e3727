"""Where `torch.compile` keeps the kernels it generates: a folder only the user can write.

TorchInductor writes the Python modules and C++/Triton kernels it generates into a cache
folder and imports them from there in later runs; a file that is already there under the
expected name is trusted, not written again. Its default folder is
`/tmp/torchinductor_<user>`, which any other user of a shared machine (a cluster's login
or compute node) can create first and fill, and so run code in every compiled run. A run
with `model.compile` (and `ser.tools.bench compile=...`) therefore compiles into
`$XDG_CACHE_HOME/ser-inductor` (default `~/.cache/ser-inductor`), or into
`TORCHINDUCTOR_CACHE_DIR` when that is set, and in either case refuses a folder that
belongs to someone else or that others may write to (ConfigError: one line, exit 2).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from ser.settings import ConfigError

VARIABLE = "TORCHINDUCTOR_CACHE_DIR"  # torch._inductor's own setting of the folder


def default_compile_cache() -> Path:
    """`$XDG_CACHE_HOME/ser-inductor`, or `~/.cache/ser-inductor`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ser-inductor"


def use_private_compile_cache() -> Path:
    """Point TorchInductor at a folder only this user can write (created 0700 if new),
    before anything is compiled; the folder's path is returned."""
    explicit = os.environ.get(VARIABLE)
    if explicit and Path(explicit) == Path(default_cache_dir()):
        # Not the user's choice: torch puts its default there when it first needs the
        # folder (importing Lightning is enough), so this value says nothing but /tmp.
        explicit = None
    path = Path(explicit).expanduser() if explicit else default_compile_cache()
    named = f"{VARIABLE}={explicit}" if explicit else f"the compile cache {path}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = path.lstat()
    except OSError as error:
        raise ConfigError(f"{named}: cannot create it ({error.strerror}); set {VARIABLE} to a folder of yours") from None
    if stat.S_ISLNK(status.st_mode) or not stat.S_ISDIR(status.st_mode):
        raise ConfigError(f"{named}: expected a folder, found a link or a file; set {VARIABLE} to a folder of yours")
    if status.st_uid != os.getuid():
        raise ConfigError(
            f"{named}: belongs to another user (uid {status.st_uid}), whose files torch.compile "
            f"would import and run; set {VARIABLE} to a folder of yours"
        )
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{named}: other users may write to it (mode {stat.S_IMODE(status.st_mode):o}), and "
            f"torch.compile imports and runs what it finds there; chmod 700 it or set {VARIABLE} "
            f"to a folder of yours"
        )
    os.environ[VARIABLE] = str(path)
    return path
