"""Numbers stay finite: audio whose features overflow, and a loss that is not finite, stop the
run with one line naming the file or the fold (exit 2), and `ser-predict` never reports a
"predicted" class from NaN probabilities. Run as a user runs the commands."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.audio_files import write_wav
from tests.helpers.case_inputs import huge_samples
from tests.helpers.cli_runs import run_refused, selected_cases, selected_probes, started_together
from tests.helpers.config import TINY_DATA
from tests.helpers.untrusted_data_cases import forged_checkpoint


def overflowing_audio(folder: Path) -> tuple[Path, Path, str]:
    for label in ("calm", "tense"):
        for i in range(3):
            write_wav(folder / "mine" / label / f"{i}.wav", seconds=0.2, seed=i)
    loud = huge_samples(folder / "mine" / "tense" / "loud.wav")
    output = folder / "run"
    line = run_refused(
        ["train.py", "dataset=folder", f"dataset.root={folder / 'mine'}", "cv.folds=2",
         f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={output}"], cwd=folder,
    )
    return loud, output, line


def predicted_overflow(folder: Path) -> tuple[Path, Path, str]:
    places = forged_checkpoint(folder)
    loud = huge_samples(folder / "loud.wav")
    table = folder / "predictions.csv"
    line = run_refused(
        ["ser.tools.predict", f"checkpoint={places['{file}']}", f"audio={folder}", f"output={table}"], folder
    )
    return loud, table, line


def diverging(stacking: list[str], folder: Path) -> tuple[Path, str]:
    output = folder / "run"
    line = run_refused(
        ["train.py", *TINY_DATA, *stacking, "trainer.max_epochs=2", "model.optimizer.lr=1e30",
         f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={output}"], cwd=folder,
    )
    return output, line


STACKING = [
    pytest.param([], id="default"),
    pytest.param(["cv.stack=false"], id="one-fold-after-another"),
    # the folds stacked in two processes: the worker's error ends the command as its own would
    pytest.param(["cv.workers=2"], id="stacked-in-two-workers"),
]


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The commands of the tests below, started together (two at a time), each on inputs in
    a folder of its own: {test or case id: what the probe returns}."""
    commands = selected_probes(request, tmp_path_factory, (
        (test_audio_whose_features_overflow_is_named, overflowing_audio),
        (test_predict_refuses_to_classify_such_audio, predicted_overflow),
    ))
    cases = selected_cases(request, test_a_loss_that_is_not_finite_stops_the_run_naming_the_fold)
    for case in STACKING:
        if case.id in cases:
            commands[case.id] = partial(diverging, case.values[0], tmp_path_factory.mktemp(case.id))
    with started_together(commands) as started:
        yield started


def test_audio_whose_features_overflow_is_named(runs: dict) -> None:
    loud, output, line = runs["test_audio_whose_features_overflow_is_named"].result()
    assert line.startswith(f"error: {loud}: its features are not finite (NaN or infinity) although its samples are")
    assert not output.exists() or not any(p.is_file() for p in output.rglob("*"))


def test_predict_refuses_to_classify_such_audio(runs: dict) -> None:
    loud, table, line = runs["test_predict_refuses_to_classify_such_audio"].result()
    assert line.startswith(f"error: {loud}: its features are not finite")
    assert not table.exists()


@pytest.mark.slow
@pytest.mark.parametrize("stacking", STACKING)
def test_a_loss_that_is_not_finite_stops_the_run_naming_the_fold(
    runs: dict, request: pytest.FixtureRequest, stacking: list[str]
) -> None:
    output, line = runs[request.node.callspec.id].result()
    # Two workers diverge at once, each on its own fold; the first error to arrive is said.
    fold = "[01]" if "cv.workers=2" in stacking else "0"
    assert re.fullmatch(
        rf"error: fold {fold}: the training loss is nan at epoch 1; the features or the weights are not "
        r"finite: check the data \(python -m ser.data\) or lower model.optimizer.lr",
        line,
    ), line
    # No figure was claimed: no fold result, no results.json.
    assert not (output / "results.json").exists() and not list(output.glob("folds/fold_*.json"))
    assert json.loads((output / "folds" / "experiment.json").read_text())["config_hash"]
