"""`cv.workers`: a job's stacked folds split over worker processes on a CPU.

On a CPU of a few cores, one process gains little from its second torch thread at these
sizes (measured: 511 against 590 ms for a stacked step of the demo's 10 folds), while
processes of one thread each share nothing and wait for nothing: the demo's folds trained
1.54x as fast as two stacked groups, one process each, as stacked in one process of two
threads (docs/scaling.md, "Stacked folds in worker processes"). That is what
`cv.workers` does:

- `auto` (the default): on a CPU, one worker per core the job has (torch's thread count,
  which fold-parallel jobs divide, ser.sweeps.callbacks.GpuSlots), or fewer where fewer
  finish as soon (at most one per fold: 10 folds on 8 cores are 5 workers of 2 folds);
  1 anywhere else, and whenever the folds do not train stacked;
- `1`: the stacked folds in this process (ser.training.stacked.run);
- `N`: N workers on a CPU (refused, exit code 2, on another device or without stacking).

Each worker runs `run_stacked` on its folds with `cores // workers` threads and sends each
finished fold's result back at once, which this process records as it records a fold of
its own (fold file, results.json). A fold computes what it computes alone, up to
floating-point order, in any worker; `cv.workers` is therefore left out of the config hash
like `cv.only_folds`. Spawned, not forked: a fork of a process whose OpenMP threads have
run can hang in the child. Only the first worker shows its progress bar (the workers move
together); every worker logs into the job's log file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import queue as queues
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.multiprocessing as multiprocessing

from ser import errors
from ser.data.datamodule import FoldDataModule
from ser.errors import ConfigError
from ser.settings import Settings
from ser.training.fold import ExperimentContext
from ser.training.implementation import device_type
from ser.training.protocols.base import Unit
from ser.training.stacked.run import run_stacked

log = logging.getLogger(__name__)

# How often the parent looks at its workers while it waits for their results (seconds).
POLL_SECONDS = 1.0


class WorkerError(RuntimeError):
    """A worker process failed with an error that could not be sent back as it was."""


def resolve_workers(settings: Settings, stacked: bool, pending: int) -> int:
    """How many processes train the job's `pending` folds: `cv.workers` resolved for the
    run's device (see the module doc); ConfigError for a number it cannot honour."""
    choice = settings.cv.workers
    on_cpu = device_type(settings.trainer.accelerator) == "cpu"
    if choice == "auto":
        # a daemonic process (a launcher's pool worker) may not start processes of its own
        if not (stacked and on_cpu) or pending < 2 or multiprocessing.current_process().daemon:
            return 1
        # the fewest workers that finish as soon as one per core would: 10 folds on 8
        # cores take 2 rounds of folds either way, so 5 workers of 2 folds, not 8 of 1 or 2
        per_worker = math.ceil(pending / max(1, torch.get_num_threads()))
        return math.ceil(pending / per_worker)
    if choice > 1 and not stacked:
        raise ConfigError(
            f"cv.workers={choice} splits the stacked folds over processes, and this run trains "
            f"its folds one after another (cv.stack={str(settings.cv.stack).lower()}); use cv.stack=true or cv.workers=1"
        )
    if choice > 1 and not on_cpu:
        raise ConfigError(
            f"cv.workers={choice} splits the folds over CPU processes, and this run trains on "
            f"trainer.accelerator={settings.trainer.accelerator}; use cv.workers=1"
        )
    return max(1, min(choice, pending))


def check_workers(settings: Settings, stacked: bool) -> None:
    """Refuse, before anything is built, a `cv.workers` number this run cannot honour."""
    resolve_workers(settings, stacked, pending=1)


def split_units(units: Sequence[Unit], workers: int) -> list[list[Unit]]:
    """`units` in `workers` consecutive groups whose sizes differ by at most one."""
    size, extra = divmod(len(units), workers)
    groups, start = [], 0
    for index in range(workers):
        end = start + size + (1 if index < extra else 0)
        groups.append(list(units[start:end]))
        start = end
    return groups


def _log_handlers() -> list[tuple[str | None, str | None]]:
    """The root logger's handlers as (file or None for the console, format), for the
    workers to log where and as this job does."""
    handlers = []
    for handler in logging.getLogger().handlers:
        form = None if handler.formatter is None else handler.formatter._fmt  # noqa: SLF001
        if isinstance(handler, logging.FileHandler):
            handlers.append((handler.baseFilename, form))
        elif isinstance(handler, logging.StreamHandler):
            handlers.append((None, form))
    return handlers


def _log_like_the_job(handlers: list[tuple[str | None, str | None]]) -> None:
    """A worker's logging: the job's handlers on the root logger, and Lightning's loggers
    sent there too (Lightning gives them a console handler of their own when it is
    imported before logging is set up, as it is in a spawned worker)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for path, form in handlers:
        handler = logging.StreamHandler() if path is None else logging.FileHandler(path, mode="a")
        if form is not None:
            handler.setFormatter(logging.Formatter(form))
        root.addHandler(handler)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        lightning = logging.getLogger(name)
        lightning.handlers.clear()
        lightning.propagate = True


def _sendable(error: BaseException) -> BaseException:
    """`error` if it survives pickling; else the nearest of the project's error classes
    (ser.errors) with its message, so the command still exits 2 saying it; else a
    WorkerError with its traceback."""
    for kind in type(error).__mro__:
        if kind is type(error) or kind.__module__ == errors.__name__:
            candidate = error if kind is type(error) else kind(str(error))
            try:
                pickle.loads(pickle.dumps(candidate))
                return candidate
            except Exception:  # noqa: BLE001, S110 - not sendable as it is: try the next class
                pass
    return WorkerError("".join(traceback.format_exception(error)))


def _work(
    settings: Settings, datamodule: FoldDataModule, units: list[Unit], context: ExperimentContext,
    threads: int, log_handlers: list[tuple[str | None, str | None]], results: Any, index: int,
) -> None:
    """One worker: its folds stacked in this process, each result sent as it finishes."""
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("high")  # as the engine sets it for its own folds
    _log_like_the_job(log_handlers)
    try:
        run_stacked(settings, datamodule, units, context, lambda result: results.put(("result", result)))
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        results.put(("error", _sendable(error)))
        return
    results.put(("done", index))


@contextlib.contextmanager
def _thread_count_at_start(threads: int) -> Iterator[None]:
    """OMP_NUM_THREADS for the processes started within: set before torch is imported, the
    OpenMP runtime starts no more threads than a worker uses, where set_num_threads alone
    leaves idle ones that take CPU time from the other workers (measured on 2 cores, the
    demo's 10 folds x 5 epochs in two workers: 29 s of fit against 34 s)."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


def run_in_workers(
    settings: Settings,
    datamodule: FoldDataModule,
    units: Sequence[Unit],
    context: ExperimentContext,
    record: Callable[[dict[str, Any]], None],
    workers: int,
) -> None:
    """Train `units` stacked in `workers` processes; `record` each result as it arrives.

    A worker's error is raised here (the project's errors as they were, so the command
    still exits 2 with their message) once the other workers are stopped; their finished
    folds are recorded, their unfinished ones resume from `last.ckpt` on a rerun."""
    from ser.models.native import available

    available()  # the C kernels built once here, not by every worker at once
    threads = max(1, torch.get_num_threads() // workers)
    context_spawn = multiprocessing.get_context("spawn")
    results = context_spawn.Queue()
    log_handlers = _log_handlers()
    processes = []
    with _thread_count_at_start(threads):
        for index, group in enumerate(split_units(units, workers)):
            own = settings if index == 0 else replace(settings, progress=False)
            process = context_spawn.Process(
                target=_work, args=(own, datamodule, group, context, threads, log_handlers, results, index),
                # not a daemon: a worker's DataLoader may start processes of its own
                name=f"ser-worker-{index}",
            )
            process.start()
            processes.append(process)
    log.info("%d folds stacked in %d worker processes, %d torch thread(s) each", len(units), workers, threads)
    try:
        _collect(processes, results, record)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _collect(processes: list[Any], results: Any, record: Callable[[dict[str, Any]], None]) -> None:
    """Record the workers' results until each has said it is done; raise a worker's error,
    or a WorkerError for a worker that ended without a word (killed, out of memory)."""
    done: set[int] = set()
    while len(done) < len(processes):
        try:
            kind, value = results.get(timeout=POLL_SECONDS)
        except queues.Empty:  # a worker's last words would be here by now
            for index, process in enumerate(processes):
                if index not in done and not process.is_alive():
                    raise WorkerError(
                        f"worker process {process.name} ended with exit code {process.exitcode} "
                        "before its folds finished (killed, or out of memory?); a rerun resumes them"
                    ) from None
            continue
        if kind == "result":
            record(value)
        elif kind == "done":
            done.add(value)
        else:
            raise value


def train_together(
    settings: Settings,
    datamodule: FoldDataModule,
    units: Sequence[Unit],
    context: ExperimentContext,
    record: Callable[[dict[str, Any]], None],
) -> None:
    """The job's stacked `units`, in this process or split over `cv.workers` processes."""
    workers = resolve_workers(settings, stacked=True, pending=len(units))
    if workers == 1:
        run_stacked(settings, datamodule, units, context, record)
    else:
        run_in_workers(settings, datamodule, units, context, record, workers)
