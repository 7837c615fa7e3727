"""The one-shot GPU check (`make gpu-check`): its pieces, and its dry mode end to end on the
CPU, which is what CI can run of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_runs
from benchmarks.gpu_check import junit_outcomes
from ser.data.features import FeatureSettings
from tests.helpers.config import ROOT, cli_environment, compose_config


def overrides_of(command: list[str]) -> list[str]:
    """The config overrides of a `python -m ser.training ...` command (launcher ones aside)."""
    return [arg for arg in command[3:] if "=" in arg and not arg.startswith(("hydra", "+parallel"))]


def test_the_runs_are_emodb_sized() -> None:
    sizes = gpu_runs.Sizes.for_mode(dry=False)
    command = gpu_runs.fold_run_command(sizes, Path("/w"), Path("/w/run"), epochs=200, jobs=1)
    cfg = compose_config(overrides_of(command))
    assert cfg.cv.folds == 10 and cfg.trainer.max_epochs == 200 and cfg.dataset.batch_size == 64
    generator = cfg.dataset.generator
    assert generator.num_speakers * 7 * generator.utterances_per_class_per_speaker == 560  # EMODB: 535
    frames = FeatureSettings(signal_length=cfg.dataset.signal_length).num_frames
    assert frames == 188  # EMODB's frames
    assert cfg.logger is None and cfg.progress is False
    assert command[-1] == "hydra.run.dir=/w/run"


def test_shared_runs_are_fold_jobs_of_one_multirun() -> None:
    sizes = gpu_runs.Sizes.for_mode(dry=False)
    command = gpu_runs.fold_run_command(sizes, Path("/w"), Path("/w/run"), epochs=20, jobs=4)
    assert command[1:4] == ["-m", "ser.training", "-m"]
    assert {"+parallel=folds", "hydra/launcher=parallel", "hydra.launcher.n_jobs=4",
            "hydra.sweep.dir=/w/run"} <= set(command)
    assert "trainer.max_epochs=20" in command


def test_projection_scales_the_training_and_pays_the_rest_once() -> None:
    run = {"jobs": 2, "epochs": 20, "wall_s": 50.0,
           "folds": {"0": {"seconds": 20.0}, "1": {"seconds": 20.0}}}
    # 20 s of training (two folds at once), 30 s paid once; x10 epochs
    assert gpu_runs.projected_full_seconds(run, 200) == pytest.approx(30.0 + 200.0)
    # Folds that record their training time: only it grows (16 of each fold's 20 s).
    for fold in run["folds"].values():
        fold["fit_seconds"] = 16.0
    assert gpu_runs.projected_full_seconds(run, 200) == pytest.approx(30.0 + (8.0 + 320.0) / 2)


def test_a_stacked_run_projects_its_one_shared_fit() -> None:
    # Each fold reports the 12 s fit all folds shared: it alone grows, x10 epochs.
    run = {"jobs": 1, "stacked": True, "epochs": 20, "wall_s": 30.0,
           "folds": {"0": {"seconds": 14.0, "fit_seconds": 12.0}, "1": {"seconds": 16.0, "fit_seconds": 12.0}}}
    assert gpu_runs.projected_full_seconds(run, 200) == pytest.approx(30.0 + 12.0 * 9)


def test_the_ways_of_the_short_runs() -> None:
    ways = gpu_runs.fold_ways(gpu_runs.Sizes.for_mode(dry=False))
    assert [(way.name, way.jobs, way.stacked) for way in ways] == [
        ("sequential", 1, False), ("stacked", 1, True), ("jobs4", 4, False), ("jobs10", 10, False),
    ]
    sizes = gpu_runs.Sizes.for_mode(dry=False)
    stacked = gpu_runs.fold_run_command(sizes, Path("/w"), Path("/w/run"), epochs=20, jobs=1, stacked=True)
    assert compose_config(overrides_of(stacked)).cv.stack is True
    alone = gpu_runs.fold_run_command(sizes, Path("/w"), Path("/w/run"), epochs=20, jobs=4)
    assert "cv.stack=false" in alone


def test_fold_comparison(tmp_path: Path) -> None:
    record = {"folds": [{"fold": 0, "test/uar": 0.5, "test/war": 0.6, "seconds": 3.0},
                        {"fold": 1, "test/uar": 0.7, "test/war": 0.7, "seconds": 3.0}]}
    (tmp_path / "results.json").write_text(json.dumps(record))
    first = gpu_runs.read_fold_metrics(tmp_path)
    assert first == {"0": {"test/uar": 0.5, "test/war": 0.6, "seconds": 3.0},
                     "1": {"test/uar": 0.7, "test/war": 0.7, "seconds": 3.0}}
    other = {"0": {"test/uar": 0.45, "test/war": 0.6}, "1": {"test/uar": 0.7, "test/war": 0.8}}
    difference = gpu_runs.compare_folds(first, other)
    assert difference["folds_compared"] == 2
    assert difference["max_abs_uar_difference"] == pytest.approx(0.05)
    assert difference["max_abs_war_difference"] == pytest.approx(0.1)
    assert gpu_runs.read_fold_metrics(tmp_path / "missing") == {}


def test_junit_outcomes_leave_out_modules_that_did_not_collect(tmp_path: Path) -> None:
    junit = tmp_path / "t.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="" name="tests.x"><error/></testcase>'
        '<testcase classname="tests.a" name="ok"/><testcase classname="tests.a" name="bad"><failure/></testcase>'
        '<testcase classname="tests.a" name="skip"><skipped/></testcase></testsuite></testsuites>'
    )
    assert junit_outcomes(junit) == {"tests.a::ok": "passed", "tests.a::bad": "failed", "tests.a::skip": "skipped"}


@pytest.mark.slow
def test_dry_mode_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    """`python -m benchmarks.gpu_check` without CUDA: each step at toy size, every record
    written, the fold jobs' figures equal to the sequential run's, with deterministic
    kernels too."""
    out = tmp_path / "check"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "dry=true", f"out={out}", "budget=600"],
        cwd=ROOT, env=cli_environment(), capture_output=True, text=True, timeout=900,
    )
    summary = json.loads((out / "summary.json").read_text())
    statuses = {step["step"]: step["status"] for step in summary["steps"]}
    assert completed.returncode == 0, (statuses, completed.stdout[-3000:])
    assert summary["dry"] is True
    assert statuses == {
        "environment": "ok", "bench-32-188": "ok", "folds-sequential": "ok", "folds-stacked": "ok",
        "folds-jobs2": "ok", "folds-full": "ok", "bench-bf16-188": "ok", "ddp": "ok", "features": "ok",
        "tests": "ok", "folds-deterministic-sequential": "ok", "folds-deterministic-stacked": "ok",
        "folds-deterministic-jobs2": "ok", "bench-compile": "skipped",
    }
    bench = json.loads((out / "bench-32-188.json").read_text())
    assert set(bench["models"]) == {"mssenet/reference", "mssenet/fast", "timnet/reference", "timnet/fast"}
    bf16 = json.loads((out / "bench-bf16-188.json").read_text())
    assert bf16["config"]["precision"] == "bf16" and set(bf16["models"]) == {"mssenet/reference", "timnet/reference"}
    runs = json.loads((out / "folds.json").read_text())["runs"]
    assert set(runs) == {
        "sequential", "stacked", "jobs2", "full", "deterministic-sequential", "deterministic-stacked",
        "deterministic-jobs2",
    }
    assert all(len(run["folds"]) == 2 for run in runs.values())
    assert runs["full"]["epochs"] == 2 and runs["jobs2"]["jobs"] == 2
    assert runs["stacked"]["stacked"] is True and not runs["jobs2"]["stacked"]
    identical = {"folds_compared": 2, "max_abs_uar_difference": 0.0, "max_abs_war_difference": 0.0}
    assert runs["jobs2"]["differences_from_first"] == identical
    # Stacked folds add in another order: the same figures up to it (a bool says whether exactly).
    assert runs["deterministic-stacked"]["differences_from_first"]["max_abs_uar_difference"] <= 0.2
    assert isinstance(runs["deterministic-stacked"]["identical"], bool)
    assert "cv.stack=true" in (out / "logs" / "folds-stacked.log").read_text().splitlines()[0]
    deterministic = runs["deterministic-jobs2"]
    assert deterministic["differences_from_first"] == identical and deterministic["identical"] is True
    assert deterministic["overrides"] == ["trainer.deterministic=true"]
    assert "projected_full_s" not in deterministic and "projected_full_s" in runs["jobs2"]
    log = (out / "logs" / "folds-deterministic-jobs2.log").read_text()
    assert "trainer.deterministic=true" in log.splitlines()[0]
    assert json.loads((out / "ddp.json").read_text())["status"] == "ok"
    rates = json.loads((out / "features.json").read_text())["utterances_per_s"]
    assert set(rates) == {"cpu"} and rates["cpu"] > 0
    # the GPU-marked tests are skipped here, and counted as such
    assert set(json.loads((out / "tests.json").read_text())["tests"].values()) == {"skipped"}
    # a second check into the same folder is refused, not mixed with the first
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "dry=true", f"out={out}"],
        cwd=ROOT, env=cli_environment(), capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 2 and "holds records of an earlier check" in again.stderr


@pytest.mark.slow
def test_full_jobs_runs_only_the_full_protocol(tmp_path: Path) -> None:
    """`full_jobs=N`: the whole protocol at once as N fold jobs, for a session with the
    time for it alone (dry here: two folds, two epochs)."""
    out = tmp_path / "check"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "dry=true", "full_jobs=2", f"out={out}"],
        cwd=ROOT, env=cli_environment(), capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:]
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert [step["step"] for step in steps] == ["environment", "folds-full"]
    full = json.loads((out / "folds.json").read_text())["runs"]["full"]
    assert full["jobs"] == 2 and full["epochs"] == 2 and set(full["folds"]) == {"0", "1"}
    assert full["projected_s"] is None and full["overrides"] == []
