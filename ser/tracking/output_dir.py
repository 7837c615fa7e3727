"""The output directory of a run: refused before anything is written, locked while in use.

A run's output directory holds finished work (fold results, checkpoints), so `claim`,
which the experiment engine (ser.training.engine) enters before writing anything:

1. refuses, reading only, a directory whose `results.json` or `folds/experiment.json`
   belongs to another configuration (config hash), so a refused rerun leaves it
   byte-identical;
2. takes the run's locks (`.locks/` below the directory; `flock`, which the operating
   system drops when the process ends, even when it is killed, so no lock goes stale).
   A run of every fold locks `.locks/run.lock` exclusively; a job of some folds
   (`cv.only_folds`, fold-parallel jobs sharing the directory) locks it shared and each
   of its folds (`.locks/fold_KK.lock`) exclusively. Two runs on one fold thus never run
   at once, while jobs of disjoint folds do. A run that finds a lock held stops at once
   (exit code 2), naming the directory; nothing waits, so nothing can deadlock;
3. checks again under the lock (a run that finished meanwhile), then writes Hydra's record
   of the job, `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`, which Hydra itself
   would write before the task starts, i.e. before the check (ser/conf/hydra/default.yaml sets
   `hydra.output_subdir: null` for that reason).

Under DDP every process runs the engine; rank zero alone locks and writes (the engine says
which process is the writer, ser.training.distributed).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ser.errors import InputError
from ser.tracking import results
from ser.tracking.atomic import atomic_write

LOCK_DIR = ".locks"
RUN_LOCK = "run.lock"
HYDRA_DIR = ".hydra"


class OutputDirectoryError(InputError):
    """An output directory this run must not write into (one clear line, exit code 2)."""


class OutputDirectoryBusy(OutputDirectoryError):
    """Another live run holds the output directory (or some of its folds)."""


def check_unclaimed(output_dir: Path, config_hash: str) -> None:
    """Refuse `output_dir` if it holds results of another configuration. Reads only."""
    for path in (Path(output_dir) / results.RESULTS_FILE, results.header_path(output_dir)):
        if not path.exists():
            continue
        try:
            saved = results.read_json(path).get("config_hash")
        except (OSError, ValueError, AttributeError) as error:
            raise OutputDirectoryError(
                f"{path} cannot be read ({error}); choose a new output directory "
                f"(hydra.run.dir=...) rather than overwrite what it holds"
            ) from None
        if saved != config_hash:
            raise OutputDirectoryError(
                f"{path} belongs to a different configuration (config hash {saved}, this run "
                f"{config_hash}); choose a new output directory (hydra.run.dir=..., or "
                f"hydra.sweep.dir=... for a multirun) instead of overwriting its results"
            )


def lock_folds(only_folds: Any) -> list[int] | None:
    """The folds a job locks: None for a run of every fold, else `cv.only_folds` as a list."""
    if only_folds is None:
        return None
    chosen = list(only_folds) if isinstance(only_folds, list | tuple | ListConfig) else [only_folds]
    if not chosen or not all(isinstance(fold, int) and fold >= 0 for fold in chosen):
        raise OutputDirectoryError(
            f"cv.only_folds={chosen} must name folds by number (an int or a list of ints); "
            f"null runs every fold"
        )
    return sorted(set(chosen))  # checked against the number of folds once it is known


class Locks:
    """flock-ed lock files, held until `release` (or until the process ends)."""

    def __init__(self) -> None:
        self.handles: list[IO[str]] = []

    def release(self) -> None:
        for handle in self.handles:
            handle.close()  # closing the file drops its flock
        self.handles = []


def holder(handle: IO[str], mode: int) -> str:
    """Who holds the lock `handle` could not take in `mode`, for the message."""
    import fcntl

    if mode == fcntl.LOCK_EX:
        try:  # held shared: by jobs of some folds, which write no name into it
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return " (jobs running some of its folds)"
        except BlockingIOError:
            pass
    handle.seek(0)
    text = handle.read().strip()  # written by its exclusive holder (empty while it writes)
    return f" ({text})" if text else ""


def take_locks(output_dir: Path, folds: Sequence[int] | None) -> Locks:
    """Lock `output_dir` for a run of every fold (None) or of `folds`; see the module doc."""
    import fcntl

    directory = Path(output_dir) / LOCK_DIR
    directory.mkdir(parents=True, exist_ok=True)
    wanted = [(RUN_LOCK, fcntl.LOCK_EX if folds is None else fcntl.LOCK_SH, "it")]
    wanted += [(f"fold_{fold:02d}.lock", fcntl.LOCK_EX, f"its fold {fold}") for fold in folds or ()]
    locks = Locks()
    for name, mode, what in wanted:
        # Kept open while the run lasts: closing it would drop the lock.
        handle = open(directory / name, "a+")
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(handle, mode)
            handle.close()
            locks.release()
            raise OutputDirectoryBusy(
                f"{output_dir} is in use: another run holds {what}{who}; wait for that run to "
                f"finish, or choose another output directory (hydra.run.dir=...)"
            ) from None
        locks.handles.append(handle)
        if mode == fcntl.LOCK_EX:  # who holds it, for the message of a run that finds it held
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
    return locks


def save_hydra_record(cfg: DictConfig) -> None:
    """Write the current Hydra job's `.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`.

    The files Hydra writes with `hydra.output_subdir=.hydra`, in the job's directory
    (`hydra.runtime.output_dir`). Nothing without Hydra (tests, notebooks), nor when
    Hydra was left to write them itself (`hydra.output_subdir` set).
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    if hydra_cfg.hydra.output_subdir is not None:
        return
    directory = Path(hydra_cfg.hydra.runtime.output_dir) / HYDRA_DIR
    for name, node in (
        ("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task),
    ):
        text = OmegaConf.to_yaml(node).encode()
        atomic_write(directory / name, lambda stream, text=text: stream.write(text))


@contextmanager
def claim_output_dir(
    cfg: DictConfig, output_dir: Path, config_hash: str, only_folds: Any = None, writer: bool = True
) -> Iterator[None]:
    """Hold `output_dir` for this run: check, lock, check again, record the Hydra job.

    Raises OutputDirectoryError (another configuration's results) or OutputDirectoryBusy
    (another run holds the directory or one of the folds `only_folds` names) before
    anything is written. The locks are released when the block ends. A process that is
    not the `writer` (DDP ranks other than zero) only checks: rank zero locks and writes
    for every rank.
    """
    check_unclaimed(output_dir, config_hash)
    if not writer:
        yield
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    locks = take_locks(output_dir, lock_folds(only_folds))
    try:
        check_unclaimed(output_dir, config_hash)  # a run that finished while we checked
        save_hydra_record(cfg)
        yield
    finally:
        locks.release()
