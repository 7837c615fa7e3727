"""Reading audio files: mono, resampling, and errors that name the file."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser.data.audio import AudioFileError, is_silent, load_audio
from tests.helpers import forged_files as forged
from tests.helpers.audio_files import deny
from tests.helpers.cli_runs import selected_cases, started_together


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[np.argmax(spectrum)])


def test_mono_at_the_same_rate_is_read_unchanged(tmp_path: Path) -> None:
    signal = tone(440, 0.5, 22050)
    path = tmp_path / "mono.wav"
    soundfile.write(path, signal, 22050, subtype="FLOAT")
    out = load_audio(path, 22050)
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_array_equal(out, signal)


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left, right = tone(440, 0.2, 16000), tone(660, 0.2, 16000, 0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-7)


def test_resampling_keeps_pitch_and_duration(tmp_path: Path) -> None:
    path = tmp_path / "tone16k.wav"
    soundfile.write(path, tone(440, 1.0, 16000), 16000, subtype="PCM_16")
    out = load_audio(path, 22050)
    assert len(out) == 22050  # ceil(16000 * 22050 / 16000), as librosa
    assert abs(dominant_frequency(out, 22050) - 440) < 2
    # Nothing leaks above the old Nyquist (the reference resampler's stopband).
    spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
    freqs = np.fft.rfftfreq(len(out) - 4000, 1 / 22050)
    assert spectrum[freqs > 8500].max() < 1e-4 * spectrum.max()


def test_resampling_close_to_librosa_mfccs(tmp_path: Path) -> None:
    librosa = pytest.importorskip("librosa")
    import torch

    from ser.data.features import FeatureSettings, extract_features, fix_length

    rng = np.random.default_rng(0)
    signal = (tone(300, 1.0, 16000) + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    path = tmp_path / "tone16k.wav"
    soundfile.write(path, signal, 16000, subtype="FLOAT")
    settings = FeatureSettings(signal_length=22050)
    ours = load_audio(path, 22050)
    theirs = librosa.resample(signal, orig_sr=16000, target_sr=22050, res_type="soxr_hq")
    assert len(ours) == len(theirs)
    a = extract_features(torch.from_numpy(fix_length(ours, 22050))[None], settings)[0]
    b = librosa.feature.mfcc(y=fix_length(theirs, 22050), sr=22050, n_mfcc=39).T
    # Resamplers differ only in the 7-8 kHz transition band; measured ~0.6 here.
    assert np.abs(a.numpy() - b).max() < 2.0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav", 16000)


def test_empty_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioFileError, match=r"empty\.wav: expected an audio file"):
        load_audio(path, 16000)


def test_wav_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "nosamples.wav"
    soundfile.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioFileError, match=r"nosamples\.wav: expected audio samples"):
        load_audio(path, 16000)


def test_garbage_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are not the samples you are looking for\n" * 20)
    with pytest.raises(AudioFileError, match=r"notes\.wav: expected an audio file") as info:
        load_audio(path, 16000)
    assert str(path) in str(info.value)


def test_truncated_wav_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    soundfile.write(path, tone(440, 0.5, 16000), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFileError, match=r"cut\.wav: expected 16000 bytes.*truncated"):
        load_audio(path, 16000)


def test_truncated_header_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "header.wav"
    soundfile.write(path, tone(440, 0.1, 16000), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioFileError, match=r"header\.wav"):
        load_audio(path, 16000)


def test_non_finite_samples(tmp_path: Path) -> None:
    signal = tone(440, 0.1, 16000)
    signal[10] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, signal, 16000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match=r"nan\.wav: expected finite"):
        load_audio(path, 16000)


def test_is_silent() -> None:
    assert is_silent(np.zeros(100, np.float32))
    assert is_silent(np.full(100, 5e-5, np.float32))
    assert is_silent(np.zeros(0, np.float32))
    assert not is_silent(tone(440, 0.01, 16000))


# ----------------------------------------------------------------------------- every read failure


def test_an_unreadable_file_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.wav"
    soundfile.write(path, tone(440, 0.1, 16000), 16000, subtype="PCM_16")
    deny(monkeypatch, path)
    with pytest.raises(AudioFileError, match=re.escape(f"{path}: cannot be read (Permission denied)")):
        load_audio(path, 16000)


def test_a_directory_named_like_audio(tmp_path: Path) -> None:
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioFileError, match=re.escape(f"{tmp_path / 'folder.wav'}: cannot be read (Is a directory)")):
        load_audio(tmp_path / "folder.wav", 16000)


def loaded_in_a_child(write, folder: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    # In a child with 2 GiB to spare: the old reader asked for a 177 GB resampling kernel
    # (1 000 003 Hz), 22 GB (44 101 Hz) or 256 GB of samples (the FLAC).
    path = write(folder / "forged.wav")
    return path, forged.run_isolated(
        "from ser.data.audio import load_audio", "lambda path: load_audio(path, 22050)", str(path)
    )


@pytest.fixture(scope="module")
def absurd_headers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The children of the test below, started together (two at a time), each reading its
    forged file in a folder of its own: {case id: (the file, the finished child)}."""
    cases = selected_cases(request, test_absurd_headers_are_refused_before_anything_is_allocated)
    commands = {
        case: partial(loaded_in_a_child, params["write"], tmp_path_factory.mktemp("forged"))
        for case, params in cases.items()
    }
    with started_together(commands) as runs:
        yield runs


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: forged.wav_with_rate(p, 1_000_003),
         "expected a sample rate of 1000..384000 Hz, but its header declares 1000003 Hz"),
        (lambda p: forged.wav_with_rate(p, 500), "expected a sample rate of 1000..384000 Hz, but its header declares 500 Hz"),
        (lambda p: forged.wav_with_rate(p, 44_101),
         "resampling its 44101 Hz to 22050 Hz would need a 22050 x 44373 kernel"),
        (lambda p: forged.wav_with_channels(p, 200), "expected 1..64 channels, but its header declares 200"),
        (lambda p: forged.flac_with_frames(p.with_suffix(".flac")),
         r"expected at most 3600 s of audio, but its header declares 68719476735 frames"),
    ],
    ids=["rate-1000003", "rate-500", "rate-prime-to-target", "channels-200", "flac-frames"],
)
def test_absurd_headers_are_refused_before_anything_is_allocated(
    absurd_headers: dict, request: pytest.FixtureRequest, write, message: str
) -> None:
    path, done = absurd_headers[request.node.callspec.id].result()
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert re.fullmatch(f"error: {re.escape(str(path))}: {message}.*\n", done.stderr)


def test_common_rates_still_resample(tmp_path: Path) -> None:
    for rate in (8000, 11025, 24000, 32000, 96000, 192000):
        path = tmp_path / f"tone{rate}.wav"
        soundfile.write(path, tone(440, 0.05, rate), rate, subtype="PCM_16")
        assert abs(len(load_audio(path, 22050)) - round(0.05 * 22050)) <= 1
