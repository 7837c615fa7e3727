"""cv.workers: a job's stacked folds split over worker processes on a CPU, as users run
it (the command line with its defaults) and in its parts: how many workers, which folds
each trains, what comes back from them and what a failing worker does to the run."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ser.errors import ConfigError, NonFiniteError
from ser.settings.rules import SettingError
from ser.tracking.results import fold_path, read_json
from ser.training import resume
from ser.training.config import config_hash
from ser.training.protocols.base import Unit
from ser.training.stacked import workers
from ser.training.stacked.workers import (
    WorkerError,
    _collect,
    _sendable,
    resolve_workers,
    split_units,
)
from tests.helpers.cli_runs import concurrently, run_train_py
from tests.helpers.config import ROOT, TINY_DATA, cli_environment, typed_config
from tests.helpers.stacking import same_figure
from tests.helpers.wandb_records import offline_runs

# What each fold computed, which the number of workers must not change.
FIGURES = ("test/uar", "test/war", "test/loss", "confusion_matrix", "epochs", "test_rows", "training_seed")


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true", "1.5"])
def test_a_workers_setting_that_is_not_a_count_is_refused(value) -> None:
    with pytest.raises(ConfigError, match=rf"cv.workers={value}.*: expected auto or a whole number >= 1"):
        typed_config(["trainer=cpu", f"cv.workers={value}"])


def test_auto_gives_each_core_a_worker_on_a_cpu_and_no_more_than_the_folds(two_threads) -> None:
    on_cpu = typed_config(["trainer=cpu"])
    assert resolve_workers(on_cpu, stacked=True, pending=10) == 2
    assert resolve_workers(on_cpu, stacked=True, pending=1) == 1
    assert resolve_workers(on_cpu, stacked=False, pending=10) == 1  # folds one after another
    torch.set_num_threads(8)  # 10 folds take two rounds on 8 cores: 5 workers do it
    assert resolve_workers(on_cpu, stacked=True, pending=10) == 5
    assert resolve_workers(on_cpu, stacked=True, pending=8) == 8
    torch.set_num_threads(1)  # what fold-parallel jobs leave each job of a shared machine
    assert resolve_workers(on_cpu, stacked=True, pending=10) == 1
    assert resolve_workers(typed_config(["trainer=gpu"]), stacked=True, pending=10) == 1


def test_auto_starts_no_worker_from_a_daemonic_process(two_threads, monkeypatch) -> None:
    # A launcher's pool worker may not start processes: its folds stay in it.
    monkeypatch.setattr(workers.multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    assert resolve_workers(typed_config(["trainer=cpu"]), stacked=True, pending=10) == 1


def test_a_number_of_workers_is_kept_where_it_can_be_and_refused_where_not() -> None:
    assert resolve_workers(typed_config(["trainer=cpu", "cv.workers=3"]), stacked=True, pending=10) == 3
    assert resolve_workers(typed_config(["trainer=cpu", "cv.workers=3"]), stacked=True, pending=2) == 2
    with pytest.raises(ConfigError, match=r"cv.workers=2 splits the stacked folds .* \(cv.stack=false\); use cv.stack=true or cv.workers=1"):
        resolve_workers(typed_config(["trainer=cpu", "cv.workers=2", "cv.stack=false"]), stacked=False, pending=10)
    with pytest.raises(ConfigError, match=r"cv.workers=2 .* trainer.accelerator=gpu; use cv.workers=1"):
        resolve_workers(typed_config(["trainer=gpu", "cv.workers=2"]), stacked=True, pending=10)


def test_the_workers_are_not_part_of_the_config_hash(tiny_config) -> None:
    # How a job runs, like cv.only_folds: a rerun with another number resumes the same run.
    assert len({config_hash(tiny_config(f"cv.workers={value}")) for value in ("auto", "1", "2")}) == 1


def test_the_folds_are_split_into_consecutive_groups_of_nearly_equal_size() -> None:
    units = [Unit(index, train_rows=[], test_rows=[]) for index in range(10)]
    groups = split_units(units, 3)
    assert [[unit.index for unit in group] for group in groups] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [len(group) for group in split_units(units[:2], 2)] == [1, 1]


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("held a lock")
        self.lock = __import__("threading").Lock()


def test_a_workers_error_reaches_the_command_as_what_it_was() -> None:
    refused = SettingError("model.optimizer.lr", "x", "a number > 0")  # does not unpickle as it is
    sent = _sendable(refused)
    assert type(sent) is ConfigError and str(sent) == str(refused)  # still exit 2, same line
    diverged = NonFiniteError("fold 3: the training loss is nan at epoch 1")
    assert _sendable(diverged) is diverged
    try:
        raise Unpicklable
    except Unpicklable as error:
        bug = _sendable(error)
    assert isinstance(bug, WorkerError) and "Unpicklable: held a lock" in str(bug) and "Traceback" in str(bug)


class FakeWorker:
    def __init__(self, exitcode: int | None, name: str = "ser-worker-1") -> None:
        self.exitcode, self.name = exitcode, name

    def is_alive(self) -> bool:
        return self.exitcode is None


def test_results_are_recorded_as_they_come_and_a_worker_that_dies_stops_the_run() -> None:
    results: queue.Queue = queue.Queue()
    results.put(("result", {"fold": 0}))
    results.put(("done", 0))
    recorded: list[dict] = []
    with pytest.raises(WorkerError, match="ser-worker-1 ended with exit code -9 before its folds finished"):
        _collect([FakeWorker(0), FakeWorker(-9)], results, recorded.append)
    assert recorded == [{"fold": 0}]  # the finished fold is kept
    with pytest.raises(WorkerError, match="exit code 0 before its folds finished"):  # ended without a word
        _collect([FakeWorker(0), FakeWorker(0)], results, recorded.append)
    results.put(("done", 0))
    results.put(("done", 1))
    _collect([FakeWorker(0), FakeWorker(0)], results, recorded.append)  # both said they are done
    results.put(("result", {"fold": 1}))
    results.put(("error", NonFiniteError("fold 2: the training loss is nan at epoch 1")))
    with pytest.raises(NonFiniteError, match="fold 2"):
        _collect([FakeWorker(None)], results, recorded.append)
    assert recorded == [{"fold": 0}, {"fold": 1}]


def torch_threads(env: dict[str, str]) -> int:
    """torch's thread count in a new process of `env`: what cv.workers=auto divides."""
    printed = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
        capture_output=True, text=True, check=True,
    )
    return int(printed.stdout)


@pytest.mark.slow
def test_command_line_with_the_defaults_splits_the_folds_over_the_cores(tmp_path, data_dir) -> None:
    # As users run it: progress bar, W&B offline, and the machine's own thread count
    # (the test environment's OMP_NUM_THREADS=1 left out), against one process.
    env = {key: value for key, value in cli_environment().items() if key != "OMP_NUM_THREADS"}
    expected = min(torch_threads(env), 2)
    common = [f"paths.data_dir={data_dir}", *TINY_DATA, "trainer.max_epochs=2"]
    split, alone = tmp_path / "split", tmp_path / "alone"
    output, _ = concurrently(
        lambda: run_train_py([*common, f"hydra.run.dir={split}"], tmp_path, env=env),
        lambda: run_train_py([*common, f"hydra.run.dir={alone}", "cv.workers=1"], tmp_path, env=env),
    )
    if expected > 1:
        assert f"2 folds stacked in {expected} worker processes" in output
    assert "Epoch 1/1" in output  # the first worker's progress bar
    record, one_process = read_json(split / "results.json"), read_json(alone / "results.json")
    assert record["status"] == "complete" and record["stacked"] is True
    assert record["config_hash"] == one_process["config_hash"]
    for ours, theirs in zip(record["folds"], one_process["folds"], strict=True):
        for key in FIGURES:
            assert same_figure(key, ours[key], theirs[key]), (key, ours[key], theirs[key])
    # Every fold's W&B run, finished, with its curves and its result; one summary run.
    runs = offline_runs(split)
    assert sorted(run["job_type"] for run in runs) == ["fold", "fold", "summary"]
    assert all(run["finished"] for run in runs)
    by_name = {run["name"]: run for run in runs}
    for fold in record["folds"]:
        fold_run = by_name[f"{record['experiment']}-fold{fold['fold']:02d}"]
        assert fold_run["summary"]["test/uar"] == pytest.approx(fold["test/uar"])
        assert {"train/loss", "train/uar", "epoch", "test/uar"} <= fold_run["history_keys"]
    # The workers log into the job's log file, in its format, Lightning's lines too.
    log = (split / "train.log").read_text()
    assert log.count("][pytorch_lightning.utilities.rank_zero][INFO] - GPU available") >= 2
    assert all(Path(split / f"checkpoints/fold_{fold:02d}/last.ckpt").exists() for fold in (0, 1))


def spawned_workers(pid: int) -> list[int]:
    """The worker processes `pid` started (multiprocessing's spawned children), oldest first."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in children.read_text().split() if children.exists() else []:
        cmdline = Path(f"/proc/{child}/cmdline")
        if cmdline.exists() and b"spawn_main" in cmdline.read_bytes():
            found.append(int(child))
    return sorted(found)


def kill_the_second_worker_inside_its_fold(args: list[str], cwd: Path, env: dict[str, str], output: Path) -> str:
    """Start a run of two workers and SIGKILL the second (fold 1) once fold 1 has a
    checkpoint and no result; the run's output."""
    log = cwd / "killed.log"
    with log.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, stdout=stream, stderr=subprocess.STDOUT
        )
    killed = False
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and not killed:
            workers_started = spawned_workers(process.pid)
            if len(workers_started) == 2 and (output / "checkpoints/fold_01/last.ckpt").exists():
                os.kill(workers_started[1], signal.SIGKILL)
                killed = True
            time.sleep(0.005)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert killed, "the run ended before its worker could be killed:\n" + log.read_text()[-3000:]
    return log.read_text()


@pytest.mark.slow
def test_a_run_whose_worker_is_killed_names_it_keeps_the_rest_and_resumes_to_the_same_figures(
    tmp_path, data_dir
) -> None:
    # As an out-of-memory kill or a preemption of one worker would leave it.
    env = cli_environment(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    common = [f"paths.data_dir={data_dir}", *TINY_DATA, "trainer.max_epochs=6", "cv.workers=2",
              "trainer.deterministic=true"]
    whole, output = tmp_path / "whole", tmp_path / "killed"
    _, killed_output = concurrently(
        lambda: run_train_py([*common, f"hydra.run.dir={whole}"], tmp_path, env=env),
        lambda: kill_the_second_worker_inside_its_fold([*common, f"hydra.run.dir={output}"], tmp_path, env, output),
    )
    assert "worker process ser-worker-1 ended with exit code -9 before its folds finished" in killed_output
    assert not fold_path(output, 1).exists()  # the killed fold claimed no result
    killed_epoch = resume.checkpoint_epoch(output / "checkpoints/fold_01/last.ckpt")
    assert killed_epoch < 5

    resumed_output = run_train_py([*common, f"hydra.run.dir={output}"], tmp_path, env=env)

    assert f"fold 1 resumes from {output / 'checkpoints/fold_01/last.ckpt'}" in resumed_output
    resumed, uninterrupted = read_json(output / "results.json"), read_json(whole / "results.json")
    assert resumed["status"] == "complete" and resumed["folds"][1]["resumed_from_epoch"] == killed_epoch
    for ours, theirs in zip(resumed["folds"], uninterrupted["folds"], strict=True):
        for key in FIGURES:
            assert same_figure(key, ours[key], theirs[key]), (key, ours[key], theirs[key])
