"""End to end: train(cfg) on tiny generated data, and what results.json and W&B hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from omegaconf import OmegaConf

from ser.tracking import figures
from ser.tracking.history import read_history
from ser.tracking.output_dir import OutputDirectoryError
from ser.tracking.results import read_json
from ser.training import engine
from ser.training.build import build_datamodule
from ser.training.engine import train
from ser.training.fold import run_fold
from tests.helpers.cli_runs import concurrently
from tests.helpers.config import ROOT, TINY_DATA, cli_environment, typed
from tests.helpers.wandb_records import offline_runs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    from omegaconf import open_dict

    from tests.helpers.config import TINY, compose_config

    output = tmp_path_factory.mktemp("e2e") / "run"
    # Two loggers at once, and two epochs so that the curves have a course; checkpoints
    # as W&B artifacts.
    cfg = compose_config(TINY + ["logger=[wandb,csv]", "trainer.max_epochs=2", "logger.wandb.log_model=true"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(output)
    handed: dict[str, list] = {}  # what the figure module was given to draw
    with pytest.MonkeyPatch.context() as patch:
        for name in ("plot_confusion_matrix", "plot_folds", "plot_curves"):
            real = getattr(figures, name)

            def spy(*args, real=real, name=name, **kwargs):
                handed[name] = [args, kwargs]
                return real(*args, **kwargs)

            patch.setattr(figures, name, spy)
        mean_uar = train(cfg)
    return cfg, output, mean_uar, handed


@pytest.mark.slow
def test_results_json_holds_every_fold(finished_run) -> None:
    cfg, output, mean_uar, _ = finished_run
    record = read_json(output / "results.json")
    assert record["status"] == "complete"
    assert record["corpus"] == "synthetic"
    assert record["class_names"] == ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"]
    num = record["num_utterances"]
    assert num == 2 * 2 * 7  # speakers x utterances per class x classes
    folds = record["folds"]
    assert [f["fold"] for f in folds] == [0, 1]
    # Test rows are disjoint and cover every utterance exactly once.
    rows = sorted(r for f in folds for r in f["test_rows"])
    assert rows == list(range(num))
    for fold in folds:
        matrix = torch.tensor(fold["confusion_matrix"])
        assert matrix.shape == (7, 7)
        assert int(matrix.sum()) == fold["num_test"] == len(fold["test_rows"])
        assert fold["test/war"] == pytest.approx(float(matrix.diagonal().sum() / matrix.sum()), abs=1e-6)
        assert fold["num_train"] + fold["num_test"] == num
        assert fold["epochs"] == 2
        assert 0 < fold["fit_seconds"] <= fold["seconds"]
    # Per-class totals over the folds equal the corpus's class counts.
    totals = torch.stack([torch.tensor(f["confusion_matrix"]).sum(dim=1) for f in folds]).sum(0)
    assert totals.tolist() == list(record["class_counts"].values())
    summary = record["summary"]
    assert summary["test/uar_mean"] == pytest.approx(sum(f["test/uar"] for f in folds) / 2)
    assert summary["test/uar_mean"] == pytest.approx(mean_uar)
    assert summary["num_test_utterances"] == num
    assert record["seeds"] == {"training": 1234, "split": 46}
    assert [f["training_seed"] for f in folds] == [1234, 1235]
    assert record["config"]["model"]["net"]["num_blocks"] == 2
    assert record["versions"]["torch"].startswith("2.11")
    assert "commit" in record["git"]
    assert (output / "checkpoints" / "fold_00" / "last.ckpt").exists()


@pytest.mark.slow
def test_one_offline_wandb_run_per_fold_and_a_summary(finished_run) -> None:
    cfg, output, _, _ = finished_run
    runs = offline_runs(output)
    folds = [r for r in runs if r["job_type"] == "fold"]
    summaries = [r for r in runs if r["job_type"] == "summary"]
    assert len(folds) == 2 and len(summaries) == 1
    group = "synthetic-mssenet-paper-se_on-spatial_dropout-tab2-mfcc"
    assert {r["group"] for r in runs} == {group}
    record = read_json(output / "results.json")
    by_name = {r["name"]: r for r in folds}
    for fold in record["folds"]:
        run = by_name[f"{group}-fold{fold['fold']:02d}"]
        assert run["summary"]["test/uar"] == pytest.approx(fold["test/uar"])
        assert run["summary"]["test/war"] == pytest.approx(fold["test/war"])
        assert "train/loss" in run["history_keys"]
        assert "test/confusion_matrix/_type" in run["summary"]
        # logger.wandb.log_model=true: the fold's checkpoint, as written, is its model artifact.
        models = [a for a in run["artifacts"] if a["type"] == "model"]
        checkpoint = output / "checkpoints" / f"fold_{fold['fold']:02d}" / "last.ckpt"
        assert len(models) == 1 and models[0]["metadata"]["original_filename"] == "last.ckpt"
        assert models[0]["files"] == {"model.ckpt": checkpoint.stat().st_size}
    assert not [a for a in summaries[0]["artifacts"] if a["type"] == "model"]
    assert summaries[0]["summary"]["test/uar_mean"] == pytest.approx(record["summary"]["test/uar_mean"])


@pytest.mark.slow
def test_the_run_draws_its_figures_from_its_records(finished_run) -> None:
    cfg, output, _, handed = finished_run
    record = read_json(output / "results.json")
    folds = record["folds"]
    matrix = handed["plot_confusion_matrix"][0][0]
    assert matrix.tolist() == torch.tensor([f["confusion_matrix"] for f in folds]).sum(0).tolist()
    assert list(handed["plot_confusion_matrix"][0][1]) == record["class_names"]
    indices, uar, war = handed["plot_folds"][0][:3]
    assert (indices, uar, war) == ([0, 1], [f["test/uar"] for f in folds], [f["test/war"] for f in folds])
    histories = handed["plot_curves"][0][0]
    assert sorted(histories) == [0, 1]
    for fold in (0, 1):  # one record per trained epoch, each with the training figures
        assert histories[fold] == read_history(output, fold)["epochs"]
        assert [e["epoch"] for e in histories[fold]] == [0, 1]
        assert all({"train/loss", "train/uar", "train/war"} <= set(e) for e in histories[fold])
    for name in (figures.CONFUSION_FILE, figures.FOLDS_FILE, figures.CURVES_FILE):
        width, height = figures.FIGURE_SIZES[name]
        image = matplotlib.image.imread(output / name)
        assert image.shape[:2] == (height * figures.DPI, width * figures.DPI)
        assert image[..., :3].std() > 0.05
    # The resolved config beside the results, as results.json records it.
    assert OmegaConf.to_container(OmegaConf.load(output / "config.yaml")) == record["config"]


@pytest.mark.slow
def test_both_loggers_run_and_wandb_holds_the_figures_and_the_table(finished_run) -> None:
    cfg, output, _, _ = finished_run
    for fold in (0, 1):  # the CSV logger, beside W&B
        lines = (output / "csv" / f"fold_{fold:02d}" / "metrics.csv").read_text().splitlines()
        assert "train/loss" in lines[0] and len(lines) >= 3
    runs = offline_runs(output)
    (summary,) = [r for r in runs if r["job_type"] == "summary"]
    for key in ("figures/confusion_matrix", "figures/folds", "figures/curves"):
        assert summary["summary"][f"{key}/_type"] == "image-file"
        assert key in {k.rsplit("/", 1)[0] for k in summary["history_keys"]}
    assert summary["summary"]["folds/_type"] == "table-file"
    assert summary["summary"]["folds/nrows"] == 2
    assert {"model", "dataset", "trainer"} <= summary["config_keys"]
    tags = {"corpus=synthetic", "features=mfcc", "task=CrossValidation"}
    for run in runs:
        assert tags <= set(run["tags"])
    media = {p.name.split("_")[0] for p in output.glob("wandb/offline-run-*/files/media/images/figures/*.png")}
    assert media == {"confusion", "folds", "curves"}
    for fold_run in (r for r in runs if r["job_type"] == "fold"):
        assert fold_run["summary"]["test/confusion_matrix_chart_table/_type"] == "table-file"
        assert fold_run["id"] == read_history(output, int(fold_run["name"][-2:]))["wandb_id"]


@pytest.mark.slow
def test_labels_are_not_changed_by_training(tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    # The DataModule training really uses: the one the engine hands to every fold.
    used: list = []

    def spy(settings, datamodule, *args, **kwargs):
        used.append((datamodule, datamodule.targets.clone()))
        return run_fold(settings, datamodule, *args, **kwargs)

    monkeypatch.setattr(engine, "run_fold", spy)
    cfg = tiny_config("cv.stack=false")  # one fold after another, each through run_fold
    train(cfg)
    assert len(used) == 2 and used[0][0] is used[1][0]  # one DataModule, both folds
    datamodule, before = used[0]
    assert torch.equal(datamodule.targets, before)  # the first fold changed no label ...
    assert torch.equal(used[1][1], before)
    assert datamodule.targets.dtype == torch.long  # ... and left them hard labels
    labels = [datamodule.class_names.index(u.label) for u in datamodule.manifest.utterances]
    assert datamodule.targets.tolist() == labels  # the manifest's classes, as parsed
    again = build_datamodule(typed(cfg))  # the cached features and labels are unchanged too
    assert torch.equal(again.targets, before)


@pytest.mark.slow
def test_a_finished_run_is_never_overwritten_by_another_config(tiny_config, tmp_path) -> None:
    output = tmp_path / "kept"
    train(tiny_config(output_dir=output))
    before = (output / "results.json").read_text()
    with pytest.raises(OutputDirectoryError, match="different configuration"):
        train(tiny_config("seed=7", output_dir=output))
    assert (output / "results.json").read_text() == before


@pytest.mark.slow
def test_command_line_run_and_clear_error_for_a_bad_setting(tmp_path, data_dir) -> None:
    # As users run it: the progress bar on and the default logger, W&B offline.
    # A cache of its own: the features are extracted, with their progress bar.
    args = [
        sys.executable, "train.py", f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'cli'}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_DATA, "model=timnet",
    ]

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=ROOT, env=cli_environment(), capture_output=True, text=True, timeout=300)

    # The run, and beside it (they share nothing but the data) the same command with a bad setting.
    done, bad = concurrently(
        lambda: run(args), lambda: run(args[:-1] + ["cv.folds=1", f"hydra.run.dir={tmp_path / 'bad'}"])
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert record["experiment"] == "synthetic-timnet-tab2-mfcc"
    assert record["status"] == "complete" and len(record["folds"]) == 2
    # On a CPU the defaults train the folds together (cv.stack=auto): one Trainer's bar.
    record_stacked = json.loads((tmp_path / "cli" / "results.json").read_text())["stacked"]
    assert record_stacked is True and "Epoch 0/0" in done.stdout
    assert "synthetic: features ━" in done.stdout and "28/28 files" in done.stdout  # extraction's
    assert "folds 1, 2 of 2 together (2 to train)" in done.stdout
    assert "config\n├── dataset" in done.stdout  # the resolved config as a tree
    for name in (figures.CONFUSION_FILE, figures.FOLDS_FILE, figures.CURVES_FILE):
        assert matplotlib.image.imread(tmp_path / "cli" / name).size > 0
    runs = offline_runs(tmp_path / "cli")
    assert sorted(run["job_type"] for run in runs) == ["fold", "fold", "summary"]
    assert all(run["finished"] for run in runs)
    (summary,) = [run for run in runs if run["job_type"] == "summary"]
    for key in ("figures/confusion_matrix", "figures/folds", "figures/curves"):
        assert summary["summary"][f"{key}/_type"] == "image-file"
    assert bad.returncode == 2
    assert "error: cv.folds=1: expected a whole number >= 2, or null" in bad.stderr
    assert "Traceback" not in bad.stderr
