"""A label is data, never config: manifest labels and folder names that look like OmegaConf
interpolations train as the literal class names they are, through `python train.py` as a
user runs it (progress bar on, W&B offline). Nothing is resolved (no environment variable
reaches a file) and nothing is instantiated (no code runs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ser.training.checkpoint import read_checkpoint
from tests.helpers.audio_files import write_noise
from tests.helpers.cli_runs import (
    environment,
    run_train_py,
    selected_probes,
    started_together,
)
from tests.helpers.wandb_records import offline_runs

SECRET = "hunter2-never-in-a-file"
# What OmegaConf would resolve to the secret, and what Hydra would build: open("ran", "w")
# in the working directory.
LEAKING = "${oc.env:SER_TEST_SECRET}"
RUNNING = "${oc.create:{_target_:builtins.open,file:ran,mode:w}}"
LABELS = sorted(["calm", LEAKING, RUNNING])
TINY_RUN = ["cv.folds=2", "trainer.max_epochs=1", "model.net.num_blocks=2", "dataset.signal_length=4000"]


def files_holding(folder: Path, text: str) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


def check_run(tmp_path: Path, output: Path) -> None:
    assert not (tmp_path / "ran").exists(), "a label was instantiated: open() ran"
    assert files_holding(tmp_path, SECRET) == [], "a label was resolved: the secret reached a file"
    assert json.loads((output / "results.json").read_text())["class_names"] == LABELS
    checkpoint = read_checkpoint(output / "checkpoints" / "fold_00" / "last.ckpt")
    assert checkpoint["ser_metadata"]["class_names"] == LABELS
    assert checkpoint["hyper_parameters"]["class_names"] == LABELS
    runs = offline_runs(output)
    assert runs and all(run["finished"] for run in runs)
    assert files_holding(output / "wandb", RUNNING), "the W&B runs hold the class names as written"


def manifest_run(folder: Path) -> Path:
    rows = []
    for i in range(12):
        write_noise(folder / "clips" / f"{i}.wav", seconds=0.25, seed=i)
        rows.append({"path": f"clips/{i}.wav", "label": LABELS[i % 3]})
    manifest = folder / "mine.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = folder / "run"
    run_train_py(
        ["dataset=manifest", f"dataset.path={manifest}", *TINY_RUN,
         f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={output}"],
        cwd=folder, env=environment(SER_TEST_SECRET=SECRET),
    )
    return output


def folder_run(folder: Path) -> Path:
    for i in range(12):
        write_noise(folder / "mine" / LABELS[i % 3] / f"{i}.wav", seconds=0.25, seed=i)
    output = folder / "run"
    # With the CSV logger too: its hparams.yaml holds the module's arguments.
    run_train_py(
        ["dataset=folder", f"dataset.root={folder / 'mine'}", *TINY_RUN, "logger=[wandb,csv]",
         f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={output}"],
        cwd=folder, env=environment(SER_TEST_SECRET=SECRET),
    )
    return output


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The runs of the two tests below, started together, each in a folder of its own:
    {test: its output directory}."""
    probes = (
        (test_manifest_labels_are_plain_class_names, manifest_run),
        (test_folder_names_are_plain_class_names, folder_run),
    )
    with started_together(selected_probes(request, tmp_path_factory, probes)) as started:
        yield started


@pytest.mark.slow
def test_manifest_labels_are_plain_class_names(runs: dict) -> None:
    output = runs["test_manifest_labels_are_plain_class_names"].result()
    check_run(output.parent, output)


@pytest.mark.slow
def test_folder_names_are_plain_class_names(runs: dict) -> None:
    output = runs["test_folder_names_are_plain_class_names"].result()
    check_run(output.parent, output)
    hparams = output / "csv" / "fold_00" / "hparams.yaml"
    assert RUNNING in hparams.read_text() and SECRET not in hparams.read_text()
