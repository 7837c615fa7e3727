"""Memory is bounded before it is spent: each probe of the issue, run as a user runs the
command (progress bar on, W&B offline), ends in one line naming the file or the setting,
exit code 2, before any large allocation, with nothing written. The trainer's devices and
loader workers beyond the machine are in tests/test_cli_errors.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from tests.helpers import forged_files as forged
from tests.helpers.audio_files import write_wav
from tests.helpers.cli_runs import run_refused
from tests.helpers.untrusted_data_cases import forged_checkpoint


def clips(folder: Path, count: int, seconds: float = 1.0) -> list[str]:
    return [str(write_wav(folder / f"{i}.wav", seconds=seconds, seed=i).name) for i in range(count)]


def train_refused(tmp_path: Path, *arguments: str) -> str:
    output = tmp_path / "run"
    line = run_refused(
        ["train.py", *arguments, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={output}"], cwd=tmp_path
    )
    assert not output.exists() or not any(p.is_file() for p in output.rglob("*")), "a refused run wrote files"
    return line


def test_one_long_recording_does_not_set_every_utterance_s_length(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    names = clips(mine, 19)
    long = mine / "interview.wav"  # 30 minutes among 1-second clips
    soundfile.write(str(long), np.zeros(30 * 60 * 8000, np.int16), 8000, subtype="PCM_16")
    manifest = mine / "train.csv"
    manifest.write_text("path,label\n" + "".join(f"{n},{('a', 'b')[i % 2]}\n" for i, n in enumerate([*names, long.name])))
    line = train_refused(tmp_path, "dataset=manifest", f"dataset.path={manifest}")
    assert line == (
        f"error: {long} ({manifest} line 21): 1800.0 s long, while 95% of the utterances last at most 1.00 s "
        f"(the length dataset.signal_length=null would give every utterance); cut it into utterances or leave it "
        f"out, or set dataset.signal_length"
    )


def test_durations_in_milliseconds_are_not_trusted_over_the_headers(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    names = clips(mine, 4, seconds=0.5)
    manifest = mine / "train.csv"
    manifest.write_text("path,label,duration\n" + "".join(f"{n},{'ab'[i % 2]},500\n" for i, n in enumerate(names)))
    line = train_refused(tmp_path, "dataset=manifest", f"dataset.path={manifest}")
    assert line == (
        f"error: {manifest} line 2: duration 500 s, but {mine / '0.wav'} lasts 0.50 s (its header); "
        f"expected the duration in seconds"
    )


def test_absurd_lengths_are_refused(tmp_path: Path) -> None:
    assert train_refused(tmp_path, "dataset.signal_length=10000000000") == (
        "error: dataset.signal_length=10000000000: expected at most 79380000 samples (an hour at 22050 Hz), or null"
    )
    mine = tmp_path / "mine"
    clips(mine, 2)
    (mine / "train.csv").write_text("path,label,duration\n0.wav,a,1e308\n1.wav,b,1\n")
    assert train_refused(tmp_path, "dataset=manifest", f"dataset.path={mine / 'train.csv'}") == (
        f"error: {mine / 'train.csv'} line 2: duration '1e308' is more than 3600 s; expected the utterance's "
        f"length in seconds"
    )


def test_a_small_flac_declaring_41_gib_is_never_decoded(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    clips(mine / "calm", 2)
    forged_flac = forged.flac_with_frames(mine / "tense" / "x.flac", 384_000 * 3600, channels=8, rate=384_000)
    line = train_refused(tmp_path, "dataset=folder", f"dataset.root={mine}", "dataset.signal_length=22050")
    assert line.startswith(f"error: {forged_flac}: its header declares 8 channel(s) x 1382400000 frames")
    assert "41.2 GiB to decode" in line


def test_a_checkpoint_s_feature_settings_are_bounded_in_predict_and_export(tmp_path: Path) -> None:
    places = forged_checkpoint(tmp_path, n_fft=2**30)
    line = run_refused(["ser.tools.predict", f"checkpoint={places['{file}']}", f"audio={places['{audio}']}"], tmp_path)
    assert line == f"error: {places['{file}']}: unusable feature settings (FeatureSettings.n_fft=1073741824: expected at most 65536)"
    places = forged_checkpoint(tmp_path / "other", signal_length=1e11)
    line = run_refused(
        ["ser.tools.export", f"checkpoint={places['{file}']}", "format=torchscript", f"out={places['{out}']}"], tmp_path
    )
    assert "FeatureSettings.signal_length=100000000000: expected at most 79380000" in line
    assert not Path(places["{out}"]).exists()
