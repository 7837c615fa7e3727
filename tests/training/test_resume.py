"""Resume: a run killed mid-fold and restarted finishes every fold, retrains none, and
matches the run that was never interrupted; checkpoints are written atomically."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ser.tracking.history import read_history
from ser.tracking.output_dir import OutputDirectoryError
from ser.tracking.results import fold_path, read_json
from ser.training import resume
from ser.training.checkpoint import load_dict
from ser.training.config import config_hash
from ser.training.engine import train
from tests.helpers.cli_runs import concurrently
from tests.helpers.config import ROOT, TINY_DATA, cli_environment
from tests.helpers.wandb_records import run_info

# Enough epochs that a kill after fold 1's first checkpoint lands inside fold 1.
EPOCHS = 6
# As users run it (progress bar on, the default logger: W&B offline), on the tiny corpus.
RUN_OVERRIDES = [
    *TINY_DATA,
    f"trainer.max_epochs={EPOCHS}",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "cv.stack=false",  # one fold after another (stacked runs: tests/training/test_stacked_runs.py)
]


def command(run_dir: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable, str(ROOT / "train.py"), *RUN_OVERRIDES,
        f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
    ]


def environment() -> dict[str, str]:
    # The same single-threaded CPU setting for every run, so float sums are identical.
    return cli_environment(
        CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
    )


def wandb_runs_by_fold(run_dir: Path) -> dict[str, list[Path]]:
    """The offline W&B run files of a run, by the fold (or summary) their run name ends with."""
    runs: dict[str, list[Path]] = {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        try:
            info = run_info(path)
            name = info["name"].rsplit("-", 1)[-1] if info["finished"] else "unfinished"
        except Exception:  # the run killed while it wrote the file
            name = "unfinished"
        runs.setdefault(name, []).append(path)
    return runs


def run_to_end(run_dir: Path, data_dir: Path) -> str:
    done = subprocess.run(
        command(run_dir, data_dir), cwd=ROOT, env=environment(), capture_output=True,
        text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def kill_inside_fold_1(run_dir: Path, data_dir: Path) -> None:
    """Start a run and SIGKILL it once fold 0 is recorded and fold 1 has a checkpoint."""
    process = subprocess.Popen(
        command(run_dir, data_dir), cwd=ROOT, env=environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if fold_path(run_dir, 0).exists() and (run_dir / "checkpoints/fold_01/last.ckpt").exists():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_dict(path)["state_dict"]


@pytest.mark.slow
def test_a_run_killed_mid_fold_resumes_and_matches_an_uninterrupted_run(
    tmp_path: Path, data_dir: Path
) -> None:
    reference_dir, resumed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    # The uninterrupted run and the one to kill need nothing of one another: at once.
    concurrently(lambda: run_to_end(reference_dir, data_dir), lambda: kill_inside_fold_1(resumed_dir, data_dir))
    assert fold_path(resumed_dir, 0).exists()
    assert not fold_path(resumed_dir, 1).exists(), "the kill came after fold 1 had finished"
    interrupted = read_json(resumed_dir / "results.json")
    assert interrupted["status"] == "running" and len(interrupted["folds"]) == 1
    killed_epoch = resume.checkpoint_epoch(resumed_dir / "checkpoints/fold_01/last.ckpt")
    assert killed_epoch < EPOCHS - 1
    finished_fold = fold_path(resumed_dir, 0).read_bytes()
    fold_1_run = read_history(resumed_dir, 1)["wandb_id"]  # the W&B run the killed attempt opened
    assert fold_1_run
    (fold_0_log,) = wandb_runs_by_fold(resumed_dir)["fold00"]
    fold_0_files = {p: p.stat().st_mtime_ns for p in (fold_0_log, resumed_dir / "checkpoints/fold_00/last.ckpt")}

    output = run_to_end(resumed_dir, data_dir)

    # Fold 0 was not trained again: its record, log and checkpoint are untouched.
    assert "fold 1/2" not in output
    assert fold_path(resumed_dir, 0).read_bytes() == finished_fold
    assert {p: p.stat().st_mtime_ns for p in fold_0_files} == fold_0_files
    runs = wandb_runs_by_fold(resumed_dir)
    assert runs["fold00"] == [fold_0_log] and len(runs["fold01"]) == len(runs["summary"]) == 1
    # The resumed fold continued the W&B run of its first attempt (same id), not a new one.
    assert run_info(runs["fold01"][0])["id"] == fold_1_run
    assert {p.name for p in runs.get("unfinished", [])} <= {f"run-{fold_1_run}.wandb"}
    # Its epoch history: the killed attempt's epochs kept, the rest trained after the restart,
    # the same figures as the uninterrupted run's (the epoch of the kill may lack its
    # training point: Lightning saves the checkpoint just before it logs that epoch).
    ours = {e["epoch"]: e for e in read_history(resumed_dir, 1)["epochs"]}
    theirs = {e["epoch"]: e for e in read_history(reference_dir, 1)["epochs"]}
    assert sorted(theirs) == list(range(EPOCHS))
    assert set(theirs) - set(ours) <= {killed_epoch}
    assert all(ours[e] == pytest.approx(theirs[e]) for e in ours)
    assert (resumed_dir / "curves.png").exists() and (resumed_dir / "confusion_matrix.png").exists()
    # Fold 1 continued from its checkpoint rather than starting over.
    assert "fold 1 resumes from" in output
    resumed = read_json(resumed_dir / "results.json")
    reference = read_json(reference_dir / "results.json")
    assert resumed["status"] == "complete"
    assert [f["fold"] for f in resumed["folds"]] == [0, 1]
    assert resumed["folds"][1]["resumed_from_epoch"] == killed_epoch
    # Deterministic CPU training: the same numbers as the run never interrupted.
    for ours, theirs in zip(resumed["folds"], reference["folds"], strict=True):
        for key in ("test/uar", "test/war", "test/loss", "confusion_matrix", "epochs", "test_rows"):
            assert ours[key] == theirs[key], key
    final, expected = (weights(d / "checkpoints/fold_01/last.ckpt") for d in (resumed_dir, reference_dir))
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)
    assert not list(resumed_dir.rglob("*.tmp")), "a temporary checkpoint was left behind"


def test_a_checkpoint_of_another_config_or_a_damaged_one_is_not_resumed(tmp_path: Path) -> None:
    folder = tmp_path / "fold_00"
    assert resume.resumable_checkpoint(folder, "abc") is None  # nothing saved yet
    resume.atomic_save_checkpoint({"ser_metadata": {"config_hash": "abc"}, "epoch": 3}, folder / "last.ckpt")
    assert resume.resumable_checkpoint(folder, "abc") == folder / "last.ckpt"
    assert resume.resumable_checkpoint(folder, "other") is None
    (folder / "last.ckpt").write_bytes(b"not a checkpoint")
    assert resume.resumable_checkpoint(folder, "abc") is None


def test_checkpoints_are_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    io = resume.AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, path)
    assert io.load_checkpoint(path)["epoch"] == 1
    assert path.stat().st_mode & 0o044, "checkpoints keep the usual permissions"

    def dies_halfway(obj: object, stream) -> None:
        stream.write(b"partial")
        raise KeyboardInterrupt  # stands for a kill in the middle of the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_an_output_directory_of_another_config_is_refused(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(output_dir=tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/results.json").write_text(json.dumps({"config_hash": "0" * 16, "status": "running"}))
    assert config_hash(cfg) != "0" * 16
    with pytest.raises(OutputDirectoryError, match="different configuration"):
        train(cfg)
