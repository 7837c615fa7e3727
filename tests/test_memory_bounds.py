"""Memory is bounded before it is spent: each probe of the issue, run as a user runs the
command (progress bar on, W&B offline), ends in one line naming the file or the setting,
exit code 2, before any large allocation, with nothing written. The trainer's devices and
loader workers beyond the machine are in tests/test_cli_errors.py."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import forged_files as forged
from tests.helpers.audio_files import write_wav
from tests.helpers.cli_runs import run_refused, selected_cases, started_together
from tests.helpers.untrusted_data_cases import forged_checkpoint


def clips(folder: Path, count: int, seconds: float = 1.0) -> list[str]:
    return [str(write_wav(folder / f"{i}.wav", seconds=seconds, seed=i).name) for i in range(count)]


def train_refused(folder: Path, *arguments: str) -> str:
    output = folder / "run"
    line = run_refused(
        ["train.py", *arguments, f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={output}"], cwd=folder
    )
    assert not output.exists() or not any(p.is_file() for p in output.rglob("*")), "a refused run wrote files"
    return line


# Each probe writes its input into a folder of its own and runs its command (refused):
# (what the test's expected line names, the line).
def long_recording(folder: Path) -> tuple[dict[str, Path], str]:
    mine = folder / "mine"
    names = clips(mine, 19)
    long = mine / "interview.wav"  # 30 minutes among 1-second clips
    soundfile.write(str(long), np.zeros(30 * 60 * 8000, np.int16), 8000, subtype="PCM_16")
    manifest = mine / "train.csv"
    manifest.write_text("path,label\n" + "".join(f"{n},{('a', 'b')[i % 2]}\n" for i, n in enumerate([*names, long.name])))
    return {"long": long, "manifest": manifest}, train_refused(folder, "dataset=manifest", f"dataset.path={manifest}")


def durations_in_milliseconds(folder: Path) -> tuple[dict[str, Path], str]:
    mine = folder / "mine"
    names = clips(mine, 4, seconds=0.5)
    manifest = mine / "train.csv"
    manifest.write_text("path,label,duration\n" + "".join(f"{n},{'ab'[i % 2]},500\n" for i, n in enumerate(names)))
    return {"mine": mine, "manifest": manifest}, train_refused(folder, "dataset=manifest", f"dataset.path={manifest}")


def absurd_signal_length(folder: Path) -> tuple[dict[str, Path], str]:
    return {}, train_refused(folder, "dataset.signal_length=10000000000")


def absurd_duration(folder: Path) -> tuple[dict[str, Path], str]:
    mine = folder / "mine"
    clips(mine, 2)
    (mine / "train.csv").write_text("path,label,duration\n0.wav,a,1e308\n1.wav,b,1\n")
    return {"mine": mine}, train_refused(folder, "dataset=manifest", f"dataset.path={mine / 'train.csv'}")


def flac_of_41_gib(folder: Path) -> tuple[dict[str, Path], str]:
    mine = folder / "mine"
    clips(mine / "calm", 2)
    forged_flac = forged.flac_with_frames(mine / "tense" / "x.flac", 384_000 * 3600, channels=8, rate=384_000)
    return {"flac": forged_flac}, train_refused(
        folder, "dataset=folder", f"dataset.root={mine}", "dataset.signal_length=22050"
    )


def predict_n_fft(folder: Path) -> tuple[dict[str, str], str]:
    places = forged_checkpoint(folder, n_fft=2**30)
    return places, run_refused(
        ["ser.tools.predict", f"checkpoint={places['{file}']}", f"audio={places['{audio}']}"], folder
    )


def export_signal_length(folder: Path) -> tuple[dict[str, str], str]:
    places = forged_checkpoint(folder / "other", signal_length=1e11)
    return places, run_refused(
        ["ser.tools.export", f"checkpoint={places['{file}']}", "format=torchscript", f"out={places['{out}']}"], folder
    )


@pytest.fixture(scope="module")
def probes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The probes of the tests below, started together (each command a process of its own,
    two at a time): {probe's name: (places, its line)}."""
    tests = {
        test_one_long_recording_does_not_set_every_utterance_s_length: [long_recording],
        test_durations_in_milliseconds_are_not_trusted_over_the_headers: [durations_in_milliseconds],
        test_absurd_lengths_are_refused: [absurd_signal_length, absurd_duration],
        test_a_small_flac_declaring_41_gib_is_never_decoded: [flac_of_41_gib],
        test_a_checkpoint_s_feature_settings_are_bounded_in_predict_and_export: [predict_n_fft, export_signal_length],
    }
    commands = {
        probe.__name__: partial(probe, tmp_path_factory.mktemp(probe.__name__))
        for test, probes in tests.items() if selected_cases(request, test) for probe in probes
    }
    with started_together(commands) as runs:
        yield runs


def test_one_long_recording_does_not_set_every_utterance_s_length(probes: dict) -> None:
    places, line = probes["long_recording"].result()
    long, manifest = places["long"], places["manifest"]
    assert line == (
        f"error: {long} ({manifest} line 21): 1800.0 s long, while 95% of the utterances last at most 1.00 s "
        f"(the length dataset.signal_length=null would give every utterance); cut it into utterances or leave it "
        f"out, or set dataset.signal_length"
    )


def test_durations_in_milliseconds_are_not_trusted_over_the_headers(probes: dict) -> None:
    places, line = probes["durations_in_milliseconds"].result()
    mine, manifest = places["mine"], places["manifest"]
    assert line == (
        f"error: {manifest} line 2: duration 500 s, but {mine / '0.wav'} lasts 0.50 s (its header); "
        f"expected the duration in seconds"
    )


def test_absurd_lengths_are_refused(probes: dict) -> None:
    assert probes["absurd_signal_length"].result()[1] == (
        "error: dataset.signal_length=10000000000: expected at most 79380000 samples (an hour at 22050 Hz), or null"
    )
    places, line = probes["absurd_duration"].result()
    mine = places["mine"]
    assert line == (
        f"error: {mine / 'train.csv'} line 2: duration '1e308' is more than 3600 s; expected the utterance's "
        f"length in seconds"
    )


def test_a_small_flac_declaring_41_gib_is_never_decoded(probes: dict) -> None:
    places, line = probes["flac_of_41_gib"].result()
    assert line.startswith(f"error: {places['flac']}: its header declares 8 channel(s) x 1382400000 frames")
    assert "41.2 GiB to decode" in line


def test_a_checkpoint_s_feature_settings_are_bounded_in_predict_and_export(probes: dict) -> None:
    places, line = probes["predict_n_fft"].result()
    assert line == f"error: {places['{file}']}: unusable feature settings (FeatureSettings.n_fft=1073741824: expected at most 65536)"
    places, line = probes["export_signal_length"].result()
    assert "FeatureSettings.signal_length=100000000000: expected at most 79380000" in line
    assert not Path(places["{out}"]).exists()
