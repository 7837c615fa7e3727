"""A stacked run (cv.stack=true) as users run it: from the command line with its defaults,
interrupted and resumed, its checkpoints used by ser-predict and ser-export, and the
settings it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ser.settings import ConfigError
from ser.tools.export import main as export
from ser.tools.inference import load_checkpoint
from ser.tracking.results import fold_path, read_json
from ser.training import resume
from ser.training.checkpoint import load_dict
from ser.training.config import config_hash
from ser.training.engine import train
from ser.training.stacked import records
from ser.training.stacked import run as stacked_run
from ser.training.stacked.policy import resolve_stacking
from tests.helpers.audio_files import write_noise
from tests.helpers.cli_runs import run_predict, run_train_py
from tests.helpers.config import TINY_DATA, one_torch_thread, typed_config
from tests.helpers.stacking import assert_weights_agree, same_figure
from tests.helpers.wandb_records import offline_runs

# What each fold computed, which a resumed run must repeat.
FIGURES = ("test/uar", "test/war", "test/loss", "confusion_matrix", "epochs", "test_rows", "val/uar", "selected_epoch")
STACKED = ["trainer.deterministic=true", "cv.stack=true"]
# Speaker folds with half of each training fold for validation, the best epoch tested.
VALIDATION = ["cv=speaker", "cv.folds=null", "cv.validation=0.5", "cv.select=best_val_uar"]


class Interrupted(Exception):
    """Stands for the kill of a run."""


def run(tiny_config, output: Path, *overrides: str) -> dict:
    with one_torch_thread():
        train(tiny_config(*STACKED, *overrides, output_dir=output))
    return read_json(output / "results.json")


def assert_same_figures(resumed: dict, whole: dict) -> None:
    assert resumed["status"] == "complete"
    for ours, theirs in zip(resumed["folds"], whole["folds"], strict=True):
        assert ours.keys() - {"resumed_from_epoch"} == theirs.keys()
        for key in set(FIGURES) & theirs.keys():
            assert same_figure(key, ours[key], theirs[key]), (key, ours[key], theirs[key])


@pytest.mark.slow
def test_a_stacked_run_killed_between_two_folds_checkpoints_resumes_to_the_same_figures(
    tiny_config, tmp_path, monkeypatch, capsys
) -> None:
    overrides = ["trainer.max_epochs=4", *VALIDATION]
    whole = run(tiny_config, tmp_path / "whole", *overrides)
    # Killed after the third last.ckpt: fold 0 has trained epochs 0 and 1, fold 1 only 0.
    written: list[Path] = []
    save = records.atomic_save_checkpoint

    def dies(checkpoint: dict, path: Path) -> None:
        if path.name == resume.LAST_CHECKPOINT:
            if len(written) == 3:
                raise Interrupted
            written.append(path)
        save(checkpoint, path)

    monkeypatch.setattr(records, "atomic_save_checkpoint", dies)
    output = tmp_path / "killed"
    with pytest.raises(Interrupted):
        run(tiny_config, output, *overrides)
    monkeypatch.undo()
    last = [output / f"checkpoints/fold_{fold:02d}/{resume.LAST_CHECKPOINT}" for fold in (0, 1)]
    assert [resume.checkpoint_epoch(path) for path in last] == [1, 0]
    assert not fold_path(output, 0).exists()
    capsys.readouterr()

    resumed = run(tiny_config, output, *overrides)

    printed = capsys.readouterr().out
    assert all(f"fold {fold} resumes from {path}" in printed for fold, path in enumerate(last))
    assert [fold["resumed_from_epoch"] for fold in resumed["folds"]] == [1, 0]
    assert_same_figures(resumed, whole)
    for fold in (0, 1):  # the same weights (resumed, a fold's epoch 1 ran alone, not grouped)
        assert_weights_agree(*(load_dict(d / f"checkpoints/fold_{fold:02d}/last.ckpt") for d in (output, tmp_path / "whole")))


@pytest.mark.slow
def test_a_finished_fold_is_skipped_and_a_trained_one_only_tested(tiny_config, tmp_path, monkeypatch) -> None:
    whole = run(tiny_config, tmp_path / "whole", "trainer.max_epochs=2")
    finish = stacked_run.finish_fold

    def dies_testing_fold_1(cfg, fold_run, *args, **kwargs):
        if fold_run.fold == 1:
            raise Interrupted
        return finish(cfg, fold_run, *args, **kwargs)

    monkeypatch.setattr(stacked_run, "finish_fold", dies_testing_fold_1)
    output = tmp_path / "killed"
    with pytest.raises(Interrupted):
        run(tiny_config, output, "trainer.max_epochs=2")
    monkeypatch.undo()
    assert fold_path(output, 0).exists() and not fold_path(output, 1).exists()
    kept = {path: path.stat().st_mtime_ns for path in (fold_path(output, 0), *output.glob("checkpoints/*/last.ckpt"))}
    fits: list = []
    monkeypatch.setattr(stacked_run, "fit_together", lambda *args: fits.append(args))

    resumed = run(tiny_config, output, "trainer.max_epochs=2")

    assert not fits  # fold 0 finished, fold 1 had trained every epoch: nothing is fitted
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    assert resumed["folds"][1]["resumed_from_epoch"] == 1
    assert_same_figures(resumed, whole)


@pytest.mark.slow
def test_command_line_stacked_run_with_the_defaults_and_its_checkpoints(tmp_path, data_dir) -> None:
    # As users run it: the progress bar on and the default logger, W&B offline.
    run_dir = tmp_path / "cli"
    output = run_train_py(
        [f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *TINY_DATA, "cv.stack=true", "trainer.max_epochs=2"],
        tmp_path,
    )
    assert "folds 1, 2 of 2 together (2 to train)" in output
    assert output.count("Epoch 1/1") >= 1 and "Epoch 1/1" in output  # one Trainer's bar
    record = read_json(run_dir / "results.json")
    assert record["status"] == "complete" and record["stacked"] is True
    assert [fold["fold"] for fold in record["folds"]] == [0, 1]
    runs = offline_runs(run_dir)
    assert sorted(run["job_type"] for run in runs) == ["fold", "fold", "summary"]
    assert all(run["finished"] for run in runs)
    by_name = {run["name"]: run for run in runs}
    for fold in record["folds"]:  # each fold's own W&B run, with its curves and its result
        fold_run = by_name[f"{record['experiment']}-fold{fold['fold']:02d}"]
        assert fold_run["summary"]["test/uar"] == pytest.approx(fold["test/uar"])
        assert {"train/loss", "train/uar", "epoch", "test/uar"} <= fold_run["history_keys"]
    # ser-predict and ser-export read a stacked fold's checkpoint as any other.
    checkpoint = run_dir / "checkpoints" / "fold_00" / "last.ckpt"
    audio = write_noise(tmp_path / "noise.wav")
    predicted = run_predict(f"checkpoint={checkpoint}", f"audio={audio}", f"output={tmp_path / 'p.csv'}")
    assert predicted.returncode == 0, predicted.stderr
    assert (tmp_path / "p.csv").read_text().splitlines()[1].startswith(str(audio))
    scripted = torch.jit.load(str(export([f"checkpoint={checkpoint}", "format=torchscript", f"out={tmp_path / 'm.pt'}"])))
    loaded = load_checkpoint(checkpoint)
    x = torch.randn(3, *loaded.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), loaded.net(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cv.stack=maybe"], "cv.stack=maybe: expected true, false or auto"),
        (["cv.stack=true", "trainer=ddp", "trainer.devices=2"], "cv.stack=true .* trainer.devices=2"),
        (["cv.stack=true", "+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches=2 per fold"),
        (["cv.stack=true", "trainer.precision=16-mixed"], "trainer.precision=16-mixed"),
        (["cv.stack=true", "logger.wandb.log_model=true"], "logger.wandb.log_model=True"),
        (["cv.stack=true", "+callbacks.swa={_target_: x}"], "cannot honour callbacks.swa per fold"),
    ],
)
def test_settings_stacking_cannot_honour_are_refused(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_stacking(typed_config(overrides))


def test_auto_stacks_only_where_measured_faster_and_nothing_blocks_it() -> None:
    # Measured faster: the fast implementation (auto's choice on a CPU) on a CPU.
    assert resolve_stacking(typed_config(["trainer=cpu"])) is True
    assert resolve_stacking(typed_config(["trainer=cpu", "model=timnet"])) is True
    assert resolve_stacking(typed_config(["trainer=cpu", "model.net.implementation=reference"])) is False
    assert resolve_stacking(typed_config(["trainer=gpu"])) is False  # no GPU measured yet
    assert resolve_stacking(typed_config(["trainer=cpu", "+trainer.gradient_clip_val=1.0"])) is False
    assert resolve_stacking(typed_config(["trainer=ddp", "trainer.devices=1", "trainer.accelerator=cpu"])) is False
    assert resolve_stacking(typed_config(["trainer=cpu", "cv.stack=false"])) is False


def test_stacking_is_part_of_the_config_hash(tiny_config) -> None:
    hashes = {config_hash(tiny_config(f"cv.stack={value}")) for value in ("true", "false", "auto")}
    assert len(hashes) == 3



@pytest.mark.slow
def test_a_fold_parallel_job_stacks_the_folds_it_runs(tiny_config, tmp_path, capsys) -> None:
    output = tmp_path / "run"
    with one_torch_thread():
        train(tiny_config(*STACKED, "cv.folds=3", "cv.only_folds=[0,2]", "trainer.max_epochs=1", output_dir=output))
    assert fold_path(output, 0).exists() and fold_path(output, 2).exists() and not fold_path(output, 1).exists()
    assert not (output / "results.json").exists()  # the job that runs fold 1 gathers it
    assert "folds [0, 2] finished" in capsys.readouterr().out


@pytest.mark.slow
def test_cross_corpus_repeats_stack_as_folds_do(tiny_config, tmp_path) -> None:
    target = [
        "task=cross_corpus", "+dataset@test_dataset=synthetic", f"test_dataset.root={tmp_path / 'target'}",
        "test_dataset.generator.num_speakers=2", "test_dataset.generator.utterances_per_class_per_speaker=1",
        "test_dataset.generator.seed=1", "cross_corpus.repeats=2", "trainer.max_epochs=2",
        "trainer.deterministic=true",
    ]
    records = {}
    for stack in ("false", "true"):
        with one_torch_thread():
            train(tiny_config(*target, f"cv.stack={stack}", output_dir=tmp_path / stack))
        records[stack] = read_json(tmp_path / stack / "results.json")
    assert records["true"]["stacked"] is True
    for ours, theirs in zip(records["true"]["runs"], records["false"]["runs"], strict=True):
        for key in ("repeat", "test/uar", "test/war", "confusion_matrix", "test_rows", "training_seed"):
            assert ours[key] == theirs[key], key
        # The loss within floating-point order: the grouped program adds in another order,
        # and which kernels earlier tests in the process left warm can move it by ~2e-5.
        assert ours["test/loss"] == pytest.approx(theirs["test/loss"], rel=1e-4)


def test_a_checkpoint_is_resumed_only_by_a_run_of_its_kind(tmp_path) -> None:
    # cv.stack=auto may stack on one device and not on another under one config hash; a
    # stacked fold's checkpoint holds no Lightning loop state, which a fold alone resumes.
    folder, path = tmp_path / "fold_00", tmp_path / "fold_00" / "last.ckpt"
    metadata = {"ser_metadata": {"config_hash": "abc"}, "epoch": 1}
    resume.atomic_save_checkpoint({**metadata, "callbacks": {resume.STACKED_STATE_KEY: {}}}, path)
    assert resume.resumable_checkpoint(folder, "abc", stacked=True) == path
    assert resume.resumable_checkpoint(folder, "abc") is None
    resume.atomic_save_checkpoint({**metadata, "loops": {}, "callbacks": {}}, path)
    assert resume.resumable_checkpoint(folder, "abc") == path
    assert resume.resumable_checkpoint(folder, "abc", stacked=True) is None
