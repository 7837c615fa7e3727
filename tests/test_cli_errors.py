"""Errors are the tool's own: only the project's error classes (ser.errors) become one line
and exit code 2; a bug anywhere else, a library's included, keeps its traceback, and
`SER_TRACEBACK=1` shows the traceback of the project's errors too. Hydra's and Lightning's
complaints about the command line are one line as well, and nothing is written (a setting
Lightning refuses is a row of docs/bad_inputs.md, run in process)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from ser.cli import run_cli
from ser.errors import ConfigError
from ser.settings import usable_cores
from tests.helpers.cli_runs import environment, run_refused, selected_cases, started_together
from tests.helpers.config import ROOT


def test_a_library_error_keeps_its_traceback() -> None:
    def library_bug(cfg: object) -> None:
        raise ValueError("not the user's input: a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_cli(library_bug, None)


def test_the_projects_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cfg: object) -> None:
        raise ConfigError("seed=abc: expected a whole number")

    monkeypatch.delenv("SER_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as ended:
        run_cli(refuse, None)
    assert ended.value.code == 2 and capsys.readouterr().err == "error: seed=abc: expected a whole number\n"
    monkeypatch.setenv("SER_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        run_cli(refuse, None)


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU runs trainer.accelerator=gpu")
COMMAND_LINES = [
    pytest.param(
        ["data.batch_size=0"],
        "error: Could not override 'data.batch_size' (Key 'data' is not in struct); to append to your config use "
        "+data.batch_size=0", id="unknown-key"),
    pytest.param(
        ["logger=nonexistent"],
        "error: In 'train': Could not find 'logger/nonexistent'; expected one of: csv, none, wandb", id="unknown-option"),
    pytest.param(
        ["trainer.accelerator=gpu"],
        "error: trainer.accelerator=gpu, but this machine has no CUDA GPU that torch can use; use "
        "trainer.accelerator=cpu (or auto)", id="no-gpu", marks=NO_GPU),
    pytest.param(
        [f"trainer.devices={usable_cores() + 62}", "trainer.accelerator=cpu"],
        f"error: trainer.devices={usable_cores() + 62}: this machine has {usable_cores()} CPU cores (one process "
        f"per device); expected at most {usable_cores()}", id="devices"),
    pytest.param(
        [f"dataset.num_workers={usable_cores() + 998}"],
        f"error: dataset.num_workers={usable_cores() + 998}: expected at most {usable_cores()}, the CPU cores this "
        f"process may use (each loader worker is a process)", id="workers"),
]


def refuse(arguments: list[str], folder: Path) -> tuple[Path, str]:
    """`train.py ARGUMENTS`, refused: its output directory and its one line."""
    output = folder / "run"
    line = run_refused(
        ["train.py", *arguments, "cv.folds=2", f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={output}"],
        cwd=folder,
    )
    return output, line


def with_traceback(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "dataset.batch_size=0", f"hydra.run.dir={folder / 'run'}"],
        cwd=folder, env=environment(SER_TRACEBACK="1"), capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def command_lines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The command lines of the tests below, run as users run them, started together (each
    a process of its own, two at a time), each in a folder of its own."""
    cases = selected_cases(request, test_command_line_mistakes_are_one_line)
    commands = {
        case.id: partial(refuse, case.values[0], tmp_path_factory.mktemp(case.id))
        for case in COMMAND_LINES if case.id in cases
    }
    if selected_cases(request, test_ser_traceback_shows_the_traceback):
        commands["traceback"] = partial(with_traceback, tmp_path_factory.mktemp("traceback"))
    with started_together(commands) as runs:
        yield runs


@pytest.mark.parametrize(("arguments", "message"), COMMAND_LINES)
def test_command_line_mistakes_are_one_line(
    command_lines: dict, request: pytest.FixtureRequest, arguments: list[str], message: str
) -> None:
    output, line = command_lines[request.node.callspec.id].result()
    assert line.startswith(message)
    # Refused before anything was written: no results, no checkpoint, no record of the job.
    written = [p for p in output.rglob("*") if p.is_file()] if output.exists() else []
    assert written == [], written


def test_ser_traceback_shows_the_traceback(command_lines: dict) -> None:
    done = command_lines["traceback"].result()
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "SettingError: dataset.batch_size=0: expected a whole number >= 1" in done.stderr
