"""The output directory: a refused run writes nothing into it, a run in progress holds it.

The slow tests run `python train.py` as users do (progress bar on, W&B offline).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from ser.sweeps.callbacks import shared_output
from ser.tracking import output_dir as outdir
from ser.tracking import results
from ser.training.config import config_hash
from ser.training.engine import train
from tests.helpers.cli_runs import concurrently, selected_probes, started_together
from tests.helpers.config import ROOT, TINY_DATA, cli_environment, compose_config
from tests.helpers.wandb_records import offline_runs


def train_py(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=cli_environment(),
        capture_output=True, text=True, timeout=300,
    )


def snapshot(directory: Path) -> dict[str, str]:
    """Every file and folder below `directory` (hidden ones too): a file's sha256."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "/"
        for path in sorted(directory.rglob("*"))
    }


@contextmanager
def held(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    """Hold a lock file as a running job would (the test process stands for that job)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
        yield


# --------------------------------------------------------------------------- the CLI


# The two tests' commands, each test's in order and with its assertions, in a folder of its
# own; the tests start together (test_a_refused_rerun_... and test_a_run_into_... have
# nothing in common but the data).
def protected_directory(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "protected"
    settings = [*TINY_DATA, f"paths.data_dir={data_dir}"]
    first = train_py(*settings, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    # The files users expect from Hydra are there, written by the run once it held the directory.
    assert yaml.safe_load((run_dir / ".hydra/overrides.yaml").read_text()) == settings
    assert yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())["seed"] == 1234
    assert yaml.safe_load((run_dir / ".hydra/hydra.yaml").read_text())["hydra"]["job"]["name"] == "train"
    assert (run_dir / "train.log").is_file()
    # Once W&B's writer has flushed every run file (it may outlive the run's process).
    assert len(offline_runs(run_dir)) == 3 and all(run["finished"] for run in offline_runs(run_dir))
    before = snapshot(run_dir)

    # A run of another configuration, and a multirun whose jobs share the directory
    # (+parallel=folds), which is refused before Hydra writes multirun.yaml or any job
    # folder into it: both refused (at once: neither holds the directory while it checks).
    refused, refused_multirun = concurrently(
        lambda: train_py(*settings, "seed=7", f"hydra.run.dir={run_dir}"),
        lambda: train_py("-m", "+parallel=folds", *settings, "seed=7", f"hydra.sweep.dir={run_dir}"),
    )
    assert refused.returncode == 2
    assert f"{run_dir / 'results.json'} belongs to a different configuration" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused_multirun.returncode == 2, refused_multirun.stderr[-3000:]
    assert "belongs to a different configuration" in refused_multirun.stderr
    assert snapshot(run_dir) == before


def busy_directory(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "busy"
    settings = [*TINY_DATA, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    with held(run_dir / ".locks/run.lock"):  # a run of every fold is in progress
        busy = train_py(*settings)
        assert busy.returncode == 2
        assert f"error: {run_dir} is in use: another run holds it" in busy.stderr
        assert "Traceback" not in busy.stderr
    assert sorted(snapshot(run_dir)) == [".locks", ".locks/run.lock"]  # nothing else written

    # A fold-parallel job of fold 0 is in progress: fold 0 is refused, fold 1 runs beside it.
    with held(run_dir / ".locks/run.lock", fcntl.LOCK_SH), held(run_dir / ".locks/fold_00.lock"):
        busy, beside = concurrently(
            lambda: train_py(*settings, "cv.only_folds=0"), lambda: train_py(*settings, "cv.only_folds=1")
        )
        assert busy.returncode == 2
        assert f"error: {run_dir} is in use: another run holds its fold 0" in busy.stderr
        assert beside.returncode == 0, beside.stderr[-3000:]
    assert results.fold_path(run_dir, 1).exists() and not results.fold_path(run_dir, 0).exists()


@pytest.fixture(scope="module")
def cli_checks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[dict]:
    """The commands and checks of the two tests below, started together: {test: its future}."""
    checks = (
        (test_a_refused_rerun_leaves_the_protected_directory_byte_identical, protected_directory),
        (test_a_run_into_a_directory_another_run_holds_exits_2_naming_it, busy_directory),
    )
    with started_together(selected_probes(request, tmp_path_factory, checks, data_dir)) as started:
        yield started


@pytest.mark.slow
def test_a_refused_rerun_leaves_the_protected_directory_byte_identical(cli_checks: dict) -> None:
    cli_checks["test_a_refused_rerun_leaves_the_protected_directory_byte_identical"].result()


@pytest.mark.slow
def test_a_run_into_a_directory_another_run_holds_exits_2_naming_it(cli_checks: dict) -> None:
    cli_checks["test_a_run_into_a_directory_another_run_holds_exits_2_naming_it"].result()


# --------------------------------------------------------------------------- the locks


def test_runs_on_one_fold_conflict_and_runs_on_disjoint_folds_do_not(tmp_path: Path) -> None:
    everything = outdir.take_locks(tmp_path, None)
    for folds in (None, [3]):
        with pytest.raises(outdir.OutputDirectoryBusy, match=f"{tmp_path} is in use: another run holds it"):
            outdir.take_locks(tmp_path, folds)
    everything.release()

    first = outdir.take_locks(tmp_path, [0, 1])
    with pytest.raises(outdir.OutputDirectoryBusy, match="holds its fold 1 \\(process \\d+ on "):
        outdir.take_locks(tmp_path, [1, 2])
    with pytest.raises(outdir.OutputDirectoryBusy, match="holds it \\(jobs running some of its folds\\)"):
        outdir.take_locks(tmp_path, None)
    second = outdir.take_locks(tmp_path, [2, 3])  # the failed attempt left fold 2 free
    first.release()
    second.release()
    outdir.take_locks(tmp_path, None).release()


def test_a_killed_run_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ser.tracking import output_dir as outdir; "
         "locks = outdir.take_locks(sys.argv[1], None); "
         "print('held', flush=True); time.sleep(600)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(outdir.OutputDirectoryBusy, match=f"another run holds it \\(process {holder.pid} on "):
            outdir.take_locks(tmp_path, None)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    outdir.take_locks(tmp_path, None).release()


def test_only_rank_zero_locks_and_writes(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(output_dir=tmp_path)
    with held(tmp_path / ".locks/run.lock"):  # rank zero holds it
        with outdir.claim_output_dir(OmegaConf.to_yaml(cfg), tmp_path, config_hash(cfg), writer=False):
            pass  # another rank: neither waits for the lock nor fails on it
    assert sorted(snapshot(tmp_path)) == [".locks", ".locks/run.lock"]


@pytest.mark.parametrize("only_folds", [[], [-1], ["a"], 1.5, "x"])
def test_folds_to_lock_are_fold_numbers(only_folds) -> None:
    with pytest.raises(ValueError, match="cv.only_folds=.* must name folds by number"):
        outdir.lock_folds(only_folds)


def test_an_unreadable_results_file_is_refused_not_overwritten(tiny_config, tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"config_hash": ')
    with pytest.raises(outdir.OutputDirectoryError, match=f"{tmp_path / 'results.json'} cannot be read"):
        train(tiny_config(output_dir=tmp_path))
    assert sorted(snapshot(tmp_path)) == ["results.json"]


def test_a_fold_job_header_of_another_configuration_is_refused_before_writing(tiny_config, tmp_path: Path) -> None:
    header = results.fold_path(tmp_path, 0).with_name("experiment.json")
    header.parent.mkdir()
    header.write_text(json.dumps({"config_hash": "0" * 16}))
    with pytest.raises(outdir.OutputDirectoryError, match="experiment.json belongs to a different"):
        train(tiny_config("cv.only_folds=1", output_dir=tmp_path))
    assert sorted(snapshot(tmp_path)) == ["folds", "folds/experiment.json"]


# --------------------------------------------------------------------------- multiruns


def hydra_config(overrides: list[str]):  # noqa: ANN201
    from ser.conf import compose

    return compose(overrides, return_hydra_config=True)


def test_a_fold_parallel_multirun_is_checked_with_its_jobs_config_hash(tmp_path: Path) -> None:
    from omegaconf import open_dict

    shared = shared_output(hydra_config(["+parallel=folds", "seed=5", f"hydra.sweep.dir={tmp_path}"]))
    job = compose_config(["+parallel=folds", "seed=5", "cv.only_folds=1"])
    with open_dict(job):
        job.paths.output_dir = str(tmp_path)
    assert shared == (tmp_path.resolve(), config_hash(job))
    # Jobs of an ordinary multirun have directories of their own: each checks its own.
    assert shared_output(hydra_config(["seed=5"])) is None
