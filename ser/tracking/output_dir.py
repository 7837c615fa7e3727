"""The output directory of a run: refused before anything is written, locked while in use.

`claim_output_dir` (entered by ser.training.engine before it writes): 1. refuses, reading
only, a directory whose results or header belong to another config hash or to other data
(the data hash), so a refused rerun leaves it byte-identical; 2. takes `flock` locks in
`.locks/` (the OS drops them when the process dies, so none goes stale): `run.lock`
exclusively for a run of every fold, shared for a job of some folds (`cv.only_folds`),
which also locks each of its `fold_KK.lock`; a lock held elsewhere stops the run at once
(exit code 2), nothing waits; 3. checks again under the lock, then writes Hydra's job
record (`.hydra/`, which ser/conf/hydra/default.yaml keeps Hydra from writing before the
check) and opens the job's log file (`ClaimedLogFile`). Under DDP rank zero alone locks
and writes (ser.training.distributed).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from omegaconf import OmegaConf

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


def check_unclaimed(
    output_dir: Path, config_hash: str, data_hash: str | None = None, unit_paths: Sequence[Path] = ()
) -> None:
    """Refuse `output_dir` if it holds results of another configuration, or (given
    `data_hash`, the identity of this run's data) work done on other data: in results.json,
    the header or the finished units' files `unit_paths`. Reads only."""
    records = (Path(output_dir) / results.RESULTS_FILE, results.header_path(output_dir))
    for path in (*records, *(unit_paths if data_hash is not None else ())):
        if not path.exists():
            continue
        try:
            record = results.read_json(path)
            saved, saved_data = record.get("config_hash"), record.get("data_hash")
        except (OSError, ValueError, AttributeError) as error:
            raise OutputDirectoryError(
                f"{path} cannot be read ({error}); choose a new output directory "
                f"(hydra.run.dir=...) rather than overwrite what it holds"
            ) from None
        if saved == config_hash and data_hash is not None and saved_data != data_hash:
            raise OutputDirectoryError(
                f"{path} was computed on other data (data hash {saved_data}, this run's data {data_hash}): "
                f"the manifest's rows or the audio files changed since; choose a new output directory "
                f"(hydra.run.dir=...) rather than mix results of two datasets"
            )
        if saved != config_hash and path in records:
            raise OutputDirectoryError(
                f"{path} belongs to a different configuration (config hash {saved}, this run "
                f"{config_hash}); choose a new output directory (hydra.run.dir=..., or "
                f"hydra.sweep.dir=... for a multirun) instead of overwriting its results"
            )


def lock_folds(only_folds: Any) -> list[int] | None:
    """The folds a job locks: None for a run of every fold, else `cv.only_folds` as a list."""
    if only_folds is None:
        return None
    chosen = list(only_folds) if isinstance(only_folds, list | tuple) else [only_folds]
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
    """Lock `output_dir` for a run of every fold (None) or of `folds`; see the module doc.

    `fcntl.flock` itself, not `filelock` (ser.tracking.atomic): these locks are shared as
    well as exclusive, and filelock's shared lock (ReadWriteLock) is an SQLite database,
    which can neither carry the holder's name that this writes into the lock file for the
    message of a run that finds the directory busy, nor be probed the way `holder` tells
    a shared holder from an exclusive one.
    """
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


class ClaimedLogFile(logging.FileHandler):
    """The job's log file (hydra/job_logging=delayed_file), written only once the run holds
    its output directory: lines logged before (the checks, reading the data) wait in memory,
    so a refused run leaves no log file behind. Processes that never claim the directory (DDP
    ranks other than zero) keep at most the last `BUFFERED` lines, and write none."""

    BUFFERED = 10_000

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = True) -> None:
        super().__init__(filename, mode, encoding, delay=True)
        self.waiting: collections.deque[logging.LogRecord] | None = collections.deque(maxlen=self.BUFFERED)

    def emit(self, record: logging.LogRecord) -> None:
        if self.waiting is not None:
            self.waiting.append(record)
        else:
            super().emit(record)

    def open_file(self) -> None:
        """Start writing: the waiting lines first."""
        waiting, self.waiting = self.waiting, None
        for record in waiting or ():
            super().emit(record)


def open_log_files() -> None:
    """Let the job's log files (`ClaimedLogFile`) be written: the directory is this run's."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ClaimedLogFile):
            handler.open_file()


def save_hydra_record(config_yaml: str) -> None:
    """Write the current Hydra job's `.hydra/config.yaml` (`config_yaml`: the composed
    config, its interpolations unresolved, as Hydra writes it), `hydra.yaml`, `overrides.yaml`.

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
    for name, text in (
        ("config.yaml", config_yaml.encode()), ("hydra.yaml", OmegaConf.to_yaml(hydra_cfg).encode()),
        ("overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task).encode()),
    ):
        atomic_write(directory / name, lambda stream, text=text: stream.write(text))


@contextmanager
def claim_output_dir(
    config_yaml: str, output_dir: Path, config_hash: str, only_folds: Any = None, writer: bool = True,
    data_hash: str | None = None, unit_paths: Sequence[Path] = (),
) -> Iterator[None]:
    """Hold `output_dir` for this run: check, lock, check again, record the Hydra job.

    Raises OutputDirectoryError (another configuration's results, or, given `data_hash`,
    work done on other data in results.json, the header or `unit_paths`) or OutputDirectoryBusy
    (another run holds the directory or one of the folds `only_folds` names) before
    anything is written. The locks are released when the block ends. A process that is
    not the `writer` (DDP ranks other than zero) only checks: rank zero locks and writes
    for every rank. `config_yaml` is the composed config for Hydra's record (`save_hydra_record`).
    """
    check_unclaimed(output_dir, config_hash, data_hash, unit_paths)
    if not writer:
        yield
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    locks = take_locks(output_dir, lock_folds(only_folds))
    try:
        check_unclaimed(output_dir, config_hash, data_hash, unit_paths)  # a run that finished while we checked
        save_hydra_record(config_yaml)
        open_log_files()
        yield
    finally:
        locks.release()
