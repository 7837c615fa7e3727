"""A rerun never mixes datasets: the identity of the data (the manifest's rows, each audio
file's size and mtime) is part of what a resumed run checks. Through `python train.py` as
a user runs it (progress bar on, W&B offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.audio_files import write_noise
from tests.helpers.cli_runs import run_refused, run_train_py, snapshot

LABELS = ("calm", "tense", "upset")


def write_manifest(path: Path, labels: list[str]) -> None:
    path.write_text("path,label\n" + "".join(f"clips/{i}.wav,{label}\n" for i, label in enumerate(labels)))


@pytest.mark.slow
def test_a_rerun_on_changed_data_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    labels = [LABELS[i % 3] for i in range(12)]
    for i in range(12):
        write_noise(tmp_path / "clips" / f"{i}.wav", seconds=0.25, seed=i)
    manifest = tmp_path / "mine.csv"
    write_manifest(manifest, labels)
    output = tmp_path / "run"
    command = [
        "dataset=manifest", f"dataset.path={manifest}", "cv.folds=2", "trainer.max_epochs=1",
        "model.net.num_blocks=2", "dataset.signal_length=4000",
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={output}",
    ]
    # Fold 0 finished, fold 1 not yet (the run stopped after fold 0).
    run_train_py([*command, "cv.only_folds=0"], cwd=tmp_path)
    assert (output / "folds" / "fold_00.json").exists() and not (output / "folds" / "fold_01.json").exists()
    before = snapshot(output)

    # The labels fixed: the same command is refused, and the directory stays as it was.
    write_manifest(manifest, [*labels[:-1], "calm"])
    line = run_refused(["train.py", *command], cwd=tmp_path)
    assert line.startswith(f"error: {output / 'folds' / 'experiment.json'} was computed on other data (data hash ")
    assert line.endswith("the manifest's rows or the audio files changed since; choose a new output directory "
                         "(hydra.run.dir=...) rather than mix results of two datasets")
    assert snapshot(output) == before

    # The same rows, but an audio file rewritten (its size or mtime changed): refused too.
    write_manifest(manifest, labels)
    clip = tmp_path / "clips" / "3.wav"
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert "was computed on other data" in run_refused(["train.py", *command], cwd=tmp_path)
    assert snapshot(output) == before

    # The data as it was: the rerun resumes, skipping fold 0 and training fold 1.
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    log = run_train_py(command, cwd=tmp_path)
    assert "fold 0 already finished" in log
    record = json.loads((output / "results.json").read_text())
    assert record["status"] == "complete" and [f["fold"] for f in record["folds"]] == [0, 1]
    assert record["data_hash"] == json.loads((output / "folds" / "fold_00.json").read_text())["data_hash"]
