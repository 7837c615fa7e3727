"""Memory, checked before it is spent: what this machine has available, and a refusal naming
the setting that asks for more.

A corpus's features are kept in memory, and extraction works on a batch of waveforms at a
time; `check_features_fit` adds both up from the feature settings alone (before a file is
read) and refuses, with the numbers and what to lower, a length that would not fit, rather
than let the operating system end the run after minutes of swapping.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import TYPE_CHECKING

from ser.errors import ConfigError

if TYPE_CHECKING:
    from ser.data.feature_kinds import AnyFeatureSettings

GIB = 2**30
# Features are held twice at the peak: the extracted batches, then their concatenation.
FEATURE_COPIES = 2


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """The memory this process may still take: /proc/meminfo's MemAvailable, lowered to what
    its cgroup (a container, a SLURM job) leaves; None where neither can be read."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    cgroup = Path("/sys/fs/cgroup")
    limit, used = _read_int(cgroup / "memory.max"), _read_int(cgroup / "memory.current")
    if limit is not None and used is not None:
        available = limit - used if available is None else min(available, limit - used)
    address_space = resource.getrlimit(resource.RLIMIT_AS)[0]  # `ulimit -v`
    mapped = _mapped_bytes()
    if address_space != resource.RLIM_INFINITY and mapped is not None:
        available = address_space - mapped if available is None else min(available, address_space - mapped)
    return available


def _mapped_bytes() -> int | None:
    """The address space this process has mapped (/proc/self/statm's first field)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def check_features_fit(
    settings: AnyFeatureSettings, utterances: int, batch: int, what: str, advice: str = "lower it"
) -> None:
    """Refuse features of `utterances` utterances that would not fit in the available memory,
    with extraction batches of `batch` utterances; `what` names the setting, `advice` what to do."""
    stored, working = settings.memory_per_utterance()
    needed = FEATURE_COPIES * stored * utterances + working * min(batch, utterances)
    available = available_bytes()
    if available is not None and needed > available:
        raise ConfigError(
            f"{what}: the features of {utterances} utterances of {settings.signal_length} samples "
            f"({settings.num_frames} frames x {settings.num_features}) would need {needed / GIB:.1f} GiB of "
            f"memory, more than the {available / GIB:.1f} GiB available; {advice}"
        )
