"""Running `python train.py` as a user does, in a session of its own: DDP workers end with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers.config import ROOT, cli_environment

# A training process that has not finished by then is stuck (a DDP deadlock waits forever).
RUN_TIMEOUT = 240

T = TypeVar("T")
K = TypeVar("K")


def environment(**extra: str) -> dict[str, str]:
    """One thread per process (two cores, up to two processes), W&B offline."""
    return cli_environment(OMP_NUM_THREADS="1", **extra)


def start_train_py(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python train.py ARGS`, output into `log`, in a session of its own so that the DDP
    workers it starts can be ended with it; `env` replaces the test environment."""
    with log.open("w") as stream:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env or environment(),
            stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
        )


def end_session(process: subprocess.Popen) -> None:
    """SIGKILL the process and every DDP worker it started (its whole session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_train_py(
    args: list[str], cwd: Path, timeout: int = RUN_TIMEOUT, env: dict[str, str] | None = None
) -> str:
    """Run `python train.py ARGS` to the end and return its output; fail if it fails or hangs."""
    log = cwd / f"train-{time.monotonic_ns()}.log"
    process = start_train_py(args, cwd, log, env)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"train.py did not finish within {timeout} s (a hang):\n{log.read_text()[-5000:]}")
    finally:
        end_session(process)  # and any worker a failed run left behind
    output = log.read_text()
    assert process.returncode == 0, output[-8000:]
    return output


def concurrently(*commands: Callable[[], T]) -> list[T]:
    """Run independent commands (each waits on a process of its own: run_train_py,
    run_refused, subprocess.run, ...) at the same time; their results in order, or the
    first one's exception. A test's commands that need nothing of one another need not
    wait for one another: a second core runs the second process."""
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = [pool.submit(command) for command in commands]
        return [future.result() for future in futures]


@contextlib.contextmanager
def started_together(commands: Mapping[K, Callable[[], T]], at_once: int = 2) -> Iterator[dict[K, Future[T]]]:
    """Start the commands of several tests of a module (each runs a process of its own and
    waits for it) in the background, `at_once` at a time, for a module-scoped fixture:
    each test takes its own with `.result()`, which raises what its command raised, and
    the other commands run meanwhile. The block's end waits for every command."""
    with ThreadPoolExecutor(at_once) as pool:
        yield {key: pool.submit(command) for key, command in commands.items()}


def selected_cases(request: pytest.FixtureRequest, test: Callable[..., object]) -> dict[str, dict[str, object]]:
    """The cases of `test` that this session runs and does not skip, by id (the empty id for
    a test without parameters), each with its parameters: a fixture that starts the cases'
    commands at once starts only these."""
    return {
        getattr(getattr(item, "callspec", None), "id", ""): dict(getattr(getattr(item, "callspec", None), "params", {}))
        for item in request.session.items
        if getattr(item, "function", None) is test and not skipped(item)
    }


def selected_probes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    probes: Iterable[tuple[Callable[..., object], Callable[..., T]]],
    *args: object,
) -> dict[str, Callable[[], T]]:
    """For each (test, probe) whose test this session runs (`selected_cases`): the probe
    called with a folder of its own (named after the probe), then `args`, by the test's
    name; what a module fixture hands to `started_together`."""
    return {
        test.__name__: partial(probe, tmp_path_factory.mktemp(probe.__name__), *args)
        for test, probe in probes
        if selected_cases(request, test)
    }


def skipped(item: pytest.Item) -> bool:
    """Whether `item` carries a skip, or a skipif whose condition is true."""
    return any(
        mark.name == "skip" or (mark.name == "skipif" and any(arg is True for arg in mark.args))
        for mark in item.iter_markers()
    )


def run_predict(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m ser.tools.predict ARGUMENTS` as a user runs it, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ser.tools.predict", *arguments],
        cwd=ROOT, env=cli_environment(), capture_output=True, text=True, timeout=300,
    )


def run_refused(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command a user runs (`train.py ...`, `-m ser.tools.predict ...`) that must be
    refused: exit code 2 and one line, `error: ...`, last on stderr, no traceback. Returns it."""
    program = [str(ROOT / "train.py")] if command[0] == "train.py" else ["-m", command[0]]
    done = subprocess.run(
        [sys.executable, *program, *command[1:]], cwd=cwd, env=env or environment(),
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # One line of its own; a run that had started training may have printed library warnings before it.
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes, to show that a refused run changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
