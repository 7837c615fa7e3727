"""Reading a manifest loses no rows silently, special files never hang, and outputs never
replace inputs: each case, run as a user runs the command, ends in one line naming the file
(and the line) with exit code 2, and nothing is written or lost. The other malformed
manifests are rows of docs/bad_inputs.md."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.audio_files import write_wav
from tests.helpers.cli_runs import run_refused
from tests.helpers.untrusted_data_cases import UNREADABLE_MANIFESTS


def refused(tmp_path: Path, *arguments: str, program: str = "train.py") -> str:
    output = tmp_path / "run"
    line = run_refused(
        [program, *arguments, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={output}"], cwd=tmp_path
    )
    assert not output.exists() or not any(p.is_file() for p in output.rglob("*")), "a refused run wrote files"
    return line


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("manifest-open-quote", "line 3: a quoted field runs on to line 5 (a quote left open?); expected one row per line"),
        ("manifest-utf16", "line 1: UTF-16 text; expected UTF-8 (save the manifest as UTF-8)"),
    ],
)
def test_a_manifest_that_would_lose_rows_is_refused_naming_the_line(tmp_path: Path, case: str, message: str) -> None:
    manifest = UNREADABLE_MANIFESTS[case](tmp_path)["{file}"]
    assert refused(tmp_path, "dataset=manifest", f"dataset.path={manifest}") == f"error: {manifest} {message}"


def test_a_fifo_in_a_label_folder_never_blocks(tmp_path: Path) -> None:
    for label in ("calm", "tense"):
        for i in range(2):
            write_wav(tmp_path / "mine" / label / f"{i}.wav", seconds=0.1, seed=i)
    fifo = tmp_path / "mine" / "tense" / "x.wav"
    os.mkfifo(fifo)
    expected = f"error: {fifo}: a FIFO, not a regular file; expected an audio file"
    # The dataset summary, which used to wait for a writer forever (training reads the same rows).
    assert refused(tmp_path, "dataset=folder", f"dataset.root={tmp_path / 'mine'}", program="ser.data") == expected


def test_outputs_never_replace_inputs(tmp_path: Path) -> None:
    """`ser-predict output=` naming the audio it classifies, and folders as outputs of
    `ser-predict` and `ser-export`, are refused before any work; nothing is written or lost."""
    from tests.helpers.cli_runs import snapshot
    from tests.helpers.untrusted_data_cases import forged_checkpoint

    places = forged_checkpoint(tmp_path / "work")
    checkpoint, audio = places["{file}"], places["{audio}"]
    before = snapshot(tmp_path)
    line = run_refused(["ser.tools.predict", f"checkpoint={checkpoint}", f"audio={audio}", f"output={audio}"], tmp_path)
    assert line == f"error: output={audio}: an audio file being classified, which writing would replace; expected another file"
    folder = tmp_path / "exports"
    folder.mkdir()
    line = run_refused(["ser.tools.predict", f"checkpoint={checkpoint}", f"audio={audio}", f"output={folder}"], tmp_path)
    assert line == f"error: output={folder}: a folder; expected a file to write, e.g. output={folder / 'predictions.csv'}"
    line = run_refused(["ser.tools.export", f"checkpoint={checkpoint}", "format=torchscript", f"out={folder}"], tmp_path)
    assert line == f"error: out={folder}: a folder; expected a file to write, e.g. out={folder / 'model.pt'}"
    line = run_refused(["ser.tools.export", f"checkpoint={checkpoint}", "format=onnx", f"out={checkpoint}"], tmp_path)
    assert line.startswith(f"error: out={checkpoint}: the checkpoint being exported, which writing would replace")
    assert snapshot(tmp_path) == before and list(folder.iterdir()) == []
