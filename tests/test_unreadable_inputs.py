"""Reading a manifest loses no rows silently, special files never hang, and outputs never
replace inputs: each case, run as a user runs the command, ends in one line naming the file
(and the line) with exit code 2, and nothing is written or lost. The other malformed
manifests are rows of docs/bad_inputs.md."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.audio_files import write_wav
from tests.helpers.cli_runs import (
    concurrently,
    run_refused,
    selected_cases,
    selected_probes,
    snapshot,
    started_together,
)
from tests.helpers.untrusted_data_cases import UNREADABLE_MANIFESTS, forged_checkpoint


def refused(tmp_path: Path, *arguments: str, program: str = "train.py") -> str:
    output = tmp_path / "run"
    line = run_refused(
        [program, *arguments, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={output}"], cwd=tmp_path
    )
    assert not output.exists() or not any(p.is_file() for p in output.rglob("*")), "a refused run wrote files"
    return line


MANIFESTS = [
    pytest.param(
        "manifest-open-quote", "line 3: a quoted field runs on to line 5 (a quote left open?); expected one row per line",
        id="manifest-open-quote",
    ),
    pytest.param("manifest-utf16", "line 1: UTF-16 text; expected UTF-8 (save the manifest as UTF-8)", id="manifest-utf16"),
]


def unreadable_manifest(case: str, folder: Path) -> tuple[str, str]:
    manifest = UNREADABLE_MANIFESTS[case](folder)["{file}"]
    return manifest, refused(folder, "dataset=manifest", f"dataset.path={manifest}")


def fifo_in_a_label_folder(folder: Path) -> tuple[Path, str]:
    for label in ("calm", "tense"):
        for i in range(2):
            write_wav(folder / "mine" / label / f"{i}.wav", seconds=0.1, seed=i)
    fifo = folder / "mine" / "tense" / "x.wav"
    os.mkfifo(fifo)
    # The dataset summary, which used to wait for a writer forever (training reads the same rows).
    return fifo, refused(folder, "dataset=folder", f"dataset.root={folder / 'mine'}", program="ser.data")


def outputs_naming_inputs(folder: Path) -> tuple[dict[str, str], Path, dict[str, bytes], list[str]]:
    """The four commands of test_outputs_never_replace_inputs, at once: (the checkpoint's
    places, the output folder, the files before, each command's line)."""
    places = forged_checkpoint(folder / "work")
    checkpoint, audio = places["{file}"], places["{audio}"]
    before = snapshot(folder)
    exports = folder / "exports"
    exports.mkdir()
    lines = concurrently(*(
        partial(run_refused, command, folder) for command in (
            ["ser.tools.predict", f"checkpoint={checkpoint}", f"audio={audio}", f"output={audio}"],
            ["ser.tools.predict", f"checkpoint={checkpoint}", f"audio={audio}", f"output={exports}"],
            ["ser.tools.export", f"checkpoint={checkpoint}", "format=torchscript", f"out={exports}"],
            ["ser.tools.export", f"checkpoint={checkpoint}", "format=onnx", f"out={checkpoint}"],
        )
    ))
    return places, exports, before, lines


@pytest.fixture(scope="module")
def probes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The commands of the tests below, started together (two tests' at a time), each on
    inputs in a folder of its own: {case id or test: what the probe returns}."""
    cases = selected_cases(request, test_a_manifest_that_would_lose_rows_is_refused_naming_the_line)
    commands = {
        case.id: partial(unreadable_manifest, case.values[0], tmp_path_factory.mktemp(case.id))
        for case in MANIFESTS if case.id in cases
    }
    commands |= selected_probes(request, tmp_path_factory, (
        (test_a_fifo_in_a_label_folder_never_blocks, fifo_in_a_label_folder),
        (test_outputs_never_replace_inputs, outputs_naming_inputs),
    ))
    with started_together(commands) as runs:
        yield runs


@pytest.mark.parametrize(("case", "message"), MANIFESTS)
def test_a_manifest_that_would_lose_rows_is_refused_naming_the_line(probes: dict, case: str, message: str) -> None:
    manifest, line = probes[case].result()
    assert line == f"error: {manifest} {message}"


def test_a_fifo_in_a_label_folder_never_blocks(probes: dict) -> None:
    fifo, line = probes["test_a_fifo_in_a_label_folder_never_blocks"].result()
    assert line == f"error: {fifo}: a FIFO, not a regular file; expected an audio file"


def test_outputs_never_replace_inputs(probes: dict) -> None:
    """`ser-predict output=` naming the audio it classifies, and folders as outputs of
    `ser-predict` and `ser-export`, are refused before any work; nothing is written or lost."""
    places, folder, before, lines = probes["test_outputs_never_replace_inputs"].result()
    checkpoint, audio = places["{file}"], places["{audio}"]
    assert lines[0] == f"error: output={audio}: an audio file being classified, which writing would replace; expected another file"
    assert lines[1] == f"error: output={folder}: a folder; expected a file to write, e.g. output={folder / 'predictions.csv'}"
    assert lines[2] == f"error: out={folder}: a folder; expected a file to write, e.g. out={folder / 'model.pt'}"
    assert lines[3].startswith(f"error: out={checkpoint}: the checkpoint being exported, which writing would replace")
    assert snapshot(folder.parent) == before and list(folder.iterdir()) == []
