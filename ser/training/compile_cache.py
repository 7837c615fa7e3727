"""Where `torch.compile` keeps the kernels it generates: a folder only the user can write.

TorchInductor writes the Python modules and C++/Triton kernels it generates into a cache
folder and imports them from there in later runs; a file that is already there under the
expected name is trusted, not written again. Its default folder is
`/tmp/torchinductor_<user>`, which any other user of a shared machine (a cluster's login
or compute node) can create first and fill, and so run code in every compiled run. A run
with `model.compile` (and `benchmarks.bench compile=...`) therefore compiles into
`$XDG_CACHE_HOME/ser-inductor` (default `~/.cache/ser-inductor`), or into
`TORCHINDUCTOR_CACHE_DIR` when that is set, and in either case refuses a folder that
belongs to someone else or that others may write to (ConfigError: one line, exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

# torch._inductor is private to torch, and the one place that says which folder torch itself
# fills in; torch offers no public accessor, and copying its rule here would drift from it silently.
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from ser.private_folder import private_folder_problem, user_cache_folder
from ser.settings import ConfigError

VARIABLE = "TORCHINDUCTOR_CACHE_DIR"  # torch._inductor's own setting of the folder


def use_private_compile_cache() -> Path:
    """Point TorchInductor at a folder only this user can write (created 0700 if new),
    before anything is compiled; the folder's path is returned."""
    explicit = os.environ.get(VARIABLE)
    if explicit and Path(explicit) == Path(default_cache_dir()):
        # Not the user's choice: torch puts its default there when it first needs the
        # folder (importing Lightning is enough), so this value says nothing but /tmp.
        explicit = None
    path = Path(explicit).expanduser() if explicit else user_cache_folder("ser-inductor")
    problem = private_folder_problem(path)
    if problem is not None:
        named = f"{VARIABLE}={explicit}" if explicit else f"the compile cache {path}"
        raise ConfigError(
            f"{named}: {problem}, and torch.compile imports and runs the files it finds there; "
            f"make it yours alone (chmod 700) or set {VARIABLE} to such a folder"
        )
    os.environ[VARIABLE] = str(path)
    return path
