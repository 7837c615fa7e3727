"""`python -m ser.data`: counts expected versus found, durations and the feature shape."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from ser.cli import run_cli
from ser.commands import summarise as summarise_config
from ser.data.datamodule import CorpusDataModule, SyntheticDataModule
from ser.data.summary import print_summary, summarise
from ser.data.timnet_npy import TimNetFeatureDataModule
from tests.helpers import forged_files as forged
from tests.helpers.audio_files import write_wav
from tests.helpers.config import ROOT, compose_config
from tests.helpers.corpus_trees import full_emodb_names, make_emodb_tree, make_ravdess_tree


def rendered(summary) -> str:
    console = Console(record=True, width=140, force_terminal=False)
    print_summary(summary, console)
    return console.export_text()


def test_ravdess_summary_counts_exclusions_durations_and_shape(tmp_path: Path) -> None:
    root = make_ravdess_tree(tmp_path / "ravdess")
    summary = summarise(CorpusDataModule(corpus="ravdess", root=str(root), features={}))
    assert summary.num_utterances == 32 and summary.expected_total == 1440
    classes = {row.name: (row.found, row.expected) for row in summary.classes}
    assert classes["neutral"] == (4, 96) and classes["angry"] == (4, 192)
    speakers = {row.name: (row.found, row.expected) for row in summary.speakers}
    assert len(speakers) == 24 and speakers["01"] == (16, 60) and speakers["24"] == (0, 60)
    assert summary.excluded == {"song (vocal channel 02)": 2, "not audio-only (modality 01/02)": 4}
    assert summary.durations["min"] == pytest.approx(0.01) == summary.durations["max"]
    assert summary.feature_shape == (215, 39) and summary.split_seed == 46
    assert not summary.complete
    text = rendered(summary)
    assert "RAVDESS" in text and "32 of 1440 expected" in text
    assert "song (vocal channel 02): 2" in text
    assert "215 frames x 39 features" in text and "110000 samples" in text


def test_complete_emodb_copy_is_reported_complete(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path / "emodb", full_emodb_names())
    summary = summarise(CorpusDataModule(corpus="emodb", root=str(root), features={}))
    assert summary.complete and summary.num_utterances == 535
    assert [row.found for row in summary.classes] == [127, 81, 46, 69, 71, 79, 62]
    assert [row.name for row in summary.speakers][:3] == ["03", "08", "09"]
    assert "535 of 535 expected utterances, complete" in rendered(summary)
    assert summary.feature_shape == (188, 39)


def test_unreadable_files_are_listed_not_fatal(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path / "emodb", ["03a01Wa.wav", "03a01Fa.wav"])
    (root / "wav" / "03a02Wa.wav").write_bytes(b"not audio")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = summarise(CorpusDataModule(corpus="emodb", root=str(root), features={}))
    assert [item["path"] for item in summary.unreadable] == [str(root / "wav" / "03a02Wa.wav")]
    assert summary.durations["max"] == pytest.approx(0.01)
    assert "1 unreadable file(s)" in rendered(summary)


def test_synthetic_corpus_summary(tmp_path: Path) -> None:
    module = SyntheticDataModule(
        root=str(tmp_path / "synthetic"), features={}, signal_length=33075,
        generator={"num_speakers": 1, "utterances_per_class_per_speaker": 1, "seconds": 0.5},
    )
    summary = summarise(module)
    assert summary.num_utterances == 7 and summary.expected_total is None
    assert all(row.expected is None for row in summary.classes)
    assert summary.durations["mean"] == pytest.approx(0.5)
    assert summary.feature_shape == (65, 39)
    assert "no fixed size" in rendered(summary)


def test_feature_file_summary(tmp_path: Path) -> None:
    labels = np.repeat(np.arange(4), 3)
    arrays = {"x": np.zeros((12, 606, 39), np.float32), "y": np.eye(4)[labels]}
    np.save(tmp_path / "IEMOCAP.npy", arrays, allow_pickle=True)
    module = TimNetFeatureDataModule(path=str(tmp_path / "IEMOCAP.npy"), corpus="iemocap", features={})
    summary = summarise(module)
    assert summary.durations is None and summary.feature_shape == (606, 39)
    assert [row.found for row in summary.classes] == [3, 3, 3, 3]
    assert [(row.name, row.found) for row in summary.speakers] == [("unknown", 12)]
    text = rendered(summary)
    assert "no audio files" in text and "606 frames x 39 features" in text


def run_module(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ser.data", *overrides],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "140",
             "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
    )


@pytest.mark.slow
def test_command_line_summary(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path / "emodb", ["03a01Wa.wav", "03a01Fa.wav", "16b10Ab.wav"])
    write_wav(root / "wav" / "08a02Nc.wav", seconds=0.5)
    result = run_module(tmp_path, "dataset=emodb", f"dataset.root={root}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "EMODB" in out and "4 of 535 expected" in out
    assert "fear" in out and "127" in out  # a class row: found vs expected
    assert "Duration (s): min 0.01, mean 0.13, max 0.50" in out
    assert "188 frames x 39 features" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emodb"]  # no outputs/ folder



def test_command_line_error_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    cfg = compose_config(["dataset=ravdess", f"dataset.root={missing}"])
    with pytest.raises(SystemExit) as caught:
        run_cli(summarise_config, cfg)
    assert caught.value.code == 2
    assert f"'{missing}' does not exist" in capsys.readouterr().err


def test_absurd_headers_are_listed_as_unreadable(tmp_path: Path) -> None:
    from ser.data.summary import durations

    good = write_wav(tmp_path / "good.wav", seconds=0.5)
    forged_rate = forged.wav_with_rate(tmp_path / "rate.wav", 1_000_003)
    stats, unreadable = durations([str(good), str(forged_rate)])
    assert stats is not None and stats["max"] == pytest.approx(0.5)  # not 1600 frames at 1 MHz
    assert [item["path"] for item in unreadable] == [str(forged_rate)]
    assert "header declares 1000003 Hz" in unreadable[0]["reason"]
