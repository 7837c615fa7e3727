"""Numbers stay finite: audio whose features overflow, and a loss that is not finite, stop the
run with one line naming the file or the fold (exit 2), and `ser-predict` never reports a
"predicted" class from NaN probabilities. Run as a user runs the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.audio_files import write_wav
from tests.helpers.case_inputs import huge_samples
from tests.helpers.cli_runs import run_refused
from tests.helpers.config import TINY_DATA
from tests.helpers.untrusted_data_cases import forged_checkpoint


def test_audio_whose_features_overflow_is_named(tmp_path: Path) -> None:
    for label in ("calm", "tense"):
        for i in range(3):
            write_wav(tmp_path / "mine" / label / f"{i}.wav", seconds=0.2, seed=i)
    loud = huge_samples(tmp_path / "mine" / "tense" / "loud.wav")
    output = tmp_path / "run"
    line = run_refused(
        ["train.py", "dataset=folder", f"dataset.root={tmp_path / 'mine'}", "cv.folds=2",
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={output}"], cwd=tmp_path,
    )
    assert line.startswith(f"error: {loud}: its features are not finite (NaN or infinity) although its samples are")
    assert not output.exists() or not any(p.is_file() for p in output.rglob("*"))


def test_predict_refuses_to_classify_such_audio(tmp_path: Path) -> None:
    places = forged_checkpoint(tmp_path)
    loud = huge_samples(tmp_path / "loud.wav")
    table = tmp_path / "predictions.csv"
    line = run_refused(
        ["ser.tools.predict", f"checkpoint={places['{file}']}", f"audio={tmp_path}", f"output={table}"], tmp_path
    )
    assert line.startswith(f"error: {loud}: its features are not finite")
    assert not table.exists()


@pytest.mark.slow
@pytest.mark.parametrize("stacking", [[], ["cv.stack=false"]], ids=["default", "one-fold-after-another"])
def test_a_loss_that_is_not_finite_stops_the_run_naming_the_fold(tmp_path: Path, stacking: list[str]) -> None:
    output = tmp_path / "run"
    line = run_refused(
        ["train.py", *TINY_DATA, *stacking, "trainer.max_epochs=2", "model.optimizer.lr=1e30",
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={output}"], cwd=tmp_path,
    )
    assert line == (
        "error: fold 0: the training loss is nan at epoch 1; the features or the weights are not finite: "
        "check the data (python -m ser.data) or lower model.optimizer.lr"
    )
    # No figure was claimed: no fold result, no results.json.
    assert not (output / "results.json").exists() and not list(output.glob("folds/fold_*.json"))
    assert json.loads((output / "folds" / "experiment.json").read_text())["config_hash"]
