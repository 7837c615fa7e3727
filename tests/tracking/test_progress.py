"""Progress: the feature extraction's bar and the run-level line, both silenced by progress=false."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict

from ser.tracking import progress
from ser.tracking.progress import RunProgress, duration
from ser.training.build import build_datamodule
from tests.helpers.config import TINY_DATA, compose_config, typed


def test_the_run_line_says_which_fold_and_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 190.0, 230.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    line = RunProgress(to_train=4)  # started at 100 s
    assert line.line("fold 3/10") == "fold 3/10 (4 to train)"
    line.done()
    # One fold in 90 s, three to go.
    assert line.line("fold 4/10") == "fold 4/10 (1/4 trained in 1m 30s, about 4m 30s left)"
    line.done()
    # Two folds in 130 s: 65 s each, two to go.
    assert line.line("fold 5/10") == "fold 5/10 (2/4 trained in 2m 10s, about 2m 10s left)"
    assert duration(3725) == "1h 02m" and duration(42) == "42s"


@pytest.mark.parametrize("shown", [True, False])
def test_feature_extraction_shows_a_bar_unless_progress_is_off(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], shown: bool
) -> None:
    cfg = compose_config([*TINY_DATA, f"progress={str(shown).lower()}", "logger=none"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.cache_dir = str(tmp_path / "cache")  # nothing cached: the features are extracted
        cfg.paths.output_dir = str(tmp_path / "run")
    datamodule = build_datamodule(typed(cfg))
    output = capsys.readouterr()
    number = len(datamodule.manifest)
    bar = "synthetic: features ━"
    if shown:
        assert bar in output.out
        assert f"{number}/{number} files" in output.out and "files/s" in output.out and "left" in output.out
    else:
        assert bar not in output.out + output.err and "files/s" not in output.out + output.err
    assert list((tmp_path / "cache").glob("features-*.pt"))  # extracted either way
