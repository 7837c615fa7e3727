"""The feature recipe against librosa (the reference's tool), frame counts, cache keys."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest
import torch
import torchaudio

from ser.data.audio import load_audio
from ser.data.feature_kinds import feature_settings
from ser.data.features import FeatureSettings, extract_features, fix_length
from ser.data.synthetic import SyntheticCorpusSettings, generate_corpus

SR = 22050
# The parity bound of the project: torchaudio in float32 against librosa.
PARITY_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Speech-like clips from the generator (one speaker, one clip per class)."""
    root = tmp_path_factory.mktemp("speech")
    settings = SyntheticCorpusSettings(
        num_speakers=1, utterances_per_class_per_speaker=1, seconds=1.5
    )
    return [load_audio(path, SR) for path in generate_corpus(root, settings)]


def chirp(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    sweep = 0.5 * np.sin(2 * np.pi * (80 * t + (6000 - 80) / (2 * seconds) * t**2))
    return sweep.astype(np.float32)


def librosa_features(signal: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """What the reference computes, as (frames, features)."""
    kwargs = dict(
        sr=settings.sample_rate,
        n_fft=settings.n_fft,
        hop_length=settings.hop_length,
        n_mels=settings.n_mels,
        pad_mode=settings.pad_mode,
    )
    if settings.kind == "mfcc":
        return librosa.feature.mfcc(y=signal, n_mfcc=settings.n_mfcc, **kwargs).T
    mel = librosa.feature.melspectrogram(y=signal, **kwargs)
    return librosa.power_to_db(mel, top_db=settings.top_db).T


def ours(signal: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    return extract_features(torch.from_numpy(signal)[None], settings)[0].numpy()


@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_matches_librosa_on_speech_and_chirp(speech: list[np.ndarray], kind: str) -> None:
    settings = FeatureSettings(kind=kind)
    for signal in [*speech[:3], chirp()]:
        fixed = fix_length(signal, settings.signal_length)
        expected = librosa_features(fixed, settings)
        actual = ours(fixed, settings)
        assert actual.shape == expected.shape == (188, settings.num_features)
        assert actual.dtype == np.float32
        # Measured: ~2.5e-4 (speech) and ~7e-4 (chirp) for MFCCs, ~1.2e-3 for log-Mel.
        assert np.abs(actual - expected).max() <= PARITY_TOLERANCE


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_pad_mode_matches_librosa_pad_mode(speech: list[np.ndarray], pad_mode: str) -> None:
    # Cropping leaves non-zero signal at both ends, where the pad mode matters.
    settings = FeatureSettings(signal_length=30000, pad_mode=pad_mode)
    for signal in (speech[0], chirp()):
        fixed = fix_length(signal, settings.signal_length)
        assert np.abs(fixed[:10]).max() > 0 and np.abs(fixed[-10:]).max() > 0
        expected = librosa_features(fixed, settings)
        assert np.abs(ours(fixed, settings) - expected).max() <= PARITY_TOLERANCE


def test_pad_modes_differ_where_the_signal_reaches_the_ends() -> None:
    signal = fix_length(chirp(), 30000)
    # No top_db clip here: it depends on the maximum, which the edge frames can change.
    constant = ours(signal, FeatureSettings(signal_length=30000, top_db=None))
    reflect = ours(signal, FeatureSettings(signal_length=30000, top_db=None, pad_mode="reflect"))
    # Only the first and last two frames (n_fft / 2 = 2 hops) see the padding.
    assert np.abs(constant[2:-2] - reflect[2:-2]).max() < 1e-3
    assert np.abs(constant[[0, -1]] - reflect[[0, -1]]).max() > 1.0


@pytest.mark.parametrize(
    ("signal_length", "frames"),
    [(88000, 172), (96000, 188), (310000, 606), (110000, 215), (130000, 254)],
)
def test_frame_counts_of_the_six_corpora(signal_length: int, frames: int) -> None:
    settings = FeatureSettings(signal_length=signal_length)
    assert settings.num_frames == frames
    out = extract_features(torch.zeros(1, 1000), settings)
    assert out.shape == (1, frames, 39)


def test_batched_equals_per_utterance_with_per_utterance_top_db(speech: list[np.ndarray]) -> None:
    settings = FeatureSettings(signal_length=33075)
    loud = torch.from_numpy(fix_length(speech[0], settings.signal_length))
    # 90 dB quieter: under a batch-wide clip this row would sit entirely on the floor.
    quiet = torch.from_numpy(fix_length(speech[1], settings.signal_length)) * 10 ** (-90 / 20)
    batch = torch.stack([loud, quiet, loud * 0.5])
    batched = extract_features(batch, settings)
    alone = torch.cat([extract_features(row[None], settings) for row in batch])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-3)
    torch.testing.assert_close(extract_features(batch, settings, batch_size=2), batched)
    # The trap this guards against: torchaudio's MFCC on a (batch, time) input clips
    # every row at the loudest row's maximum - 80 dB.
    naive = torchaudio.transforms.MFCC(
        sample_rate=SR,
        n_mfcc=39,
        melkwargs=dict(
            n_fft=2048,
            hop_length=512,
            n_mels=128,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        ),
    )(batch).transpose(-1, -2)
    assert (naive[1] - alone[1]).abs().max() > 10
    torch.testing.assert_close(naive[0], alone[0], rtol=0, atol=1e-2)


def test_extract_features_shapes_and_errors() -> None:
    settings = FeatureSettings(signal_length=4096, kind="logmel", n_mels=40)
    out = extract_features(torch.randn(3, 5000, dtype=torch.float64), settings)
    assert out.shape == (3, 9, 40) and out.dtype == torch.float32
    assert extract_features(torch.zeros(0, 100), settings).shape == (0, 9, 40)
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        extract_features(torch.zeros(4096), settings)
    with pytest.raises(TypeError, match="torch.Tensor"):
        extract_features(np.zeros((1, 4096)), settings)  # type: ignore[arg-type]


class TestFixLength:
    def test_pad_odd_puts_the_extra_zero_on_the_right(self) -> None:
        out = fix_length(np.array([1.0, 2.0]), 5)
        np.testing.assert_array_equal(out, [0.0, 1.0, 2.0, 0.0, 0.0])

    def test_pad_even(self) -> None:
        np.testing.assert_array_equal(fix_length(np.array([1.0, 2.0]), 4), [0, 1, 2, 0])

    def test_crop_starts_at_half_the_excess(self) -> None:
        signal = np.arange(10)
        np.testing.assert_array_equal(fix_length(signal, 4), [3, 4, 5, 6])  # (10-4)//2 = 3
        np.testing.assert_array_equal(fix_length(signal, 7), [1, 2, 3, 4, 5, 6, 7])  # 3//2 = 1

    def test_same_length_unchanged(self) -> None:
        signal = np.arange(6)
        assert fix_length(signal, 6) is signal

    def test_tensor_batch_along_last_axis(self) -> None:
        batch = torch.arange(6.0).reshape(2, 3)
        padded = fix_length(batch, 6)
        assert isinstance(padded, torch.Tensor)
        torch.testing.assert_close(padded, torch.tensor([[0, 0, 1, 2, 0, 0], [0, 3, 4, 5, 0, 0.0]]))
        torch.testing.assert_close(fix_length(batch, 1), torch.tensor([[1.0], [4.0]]))

    def test_rejects_non_positive_length(self) -> None:
        with pytest.raises(ValueError, match="length"):
            fix_length(np.zeros(3), 0)


class TestSettings:
    def test_defaults_are_timnet_emodb(self) -> None:
        settings = FeatureSettings()
        assert (settings.num_features, settings.num_frames) == (39, 188)
        assert FeatureSettings(kind="logmel").num_features == 128

    def test_key_is_stable(self) -> None:
        # Cached feature files are named by this key: changing it invalidates caches.
        assert FeatureSettings().key() == FeatureSettings().key()
        assert len(FeatureSettings().key()) == 16
        assert FeatureSettings(top_db=80, sample_rate=22050.0).key() == FeatureSettings().key()

    def test_key_changes_with_every_field(self) -> None:
        base = FeatureSettings()
        changed = {
            "kind": "logmel",
            "sample_rate": 16000,
            "signal_length": 88000,
            "n_mfcc": 40,
            "n_fft": 1024,
            "hop_length": 256,
            "n_mels": 64,
            "pad_mode": "reflect",
            "top_db": None,
            "f_min": 20.0,
            "f_max": 8000.0,
        }
        assert set(changed) == {f.name for f in dataclasses.fields(FeatureSettings)}
        keys = {base.key()}
        for name, value in changed.items():
            keys.add(dataclasses.replace(base, **{name: value}).key())
        assert len(keys) == len(changed) + 1

    @pytest.mark.parametrize(
        ("overrides", "named"),
        [
            ({"kind": "spectrogram"}, "kind"),
            ({"pad_mode": "edge"}, "pad_mode"),
            ({"n_mfcc": 129}, "n_mfcc"),
            ({"hop_length": 0}, "hop_length"),
            ({"hop_length": 4096}, "hop_length"),
            ({"sample_rate": True}, "sample_rate"),
            ({"n_fft": 2048.5}, "n_fft"),
            ({"top_db": -1.0}, "top_db"),
            ({"f_max": 12000.0}, "f_max"),
            ({"f_min": 500.0, "f_max": 400.0}, "f_max"),
            ({"signal_length": 1000, "pad_mode": "reflect"}, "signal_length"),
        ],
    )
    def test_invalid_values_name_the_setting(self, overrides: dict, named: str) -> None:
        with pytest.raises(ValueError, match=rf"FeatureSettings\.{named}"):
            FeatureSettings(**overrides)

    def test_from_mapping(self) -> None:
        settings = feature_settings(
            {"_target_": "ser.data.features.FeatureSettings", "kind": "logmel", "n_mels": 64},
            signal_length=96000,
        )
        assert settings == FeatureSettings(kind="logmel", n_mels=64)

    def test_from_mapping_rejects_unknown_keys(self) -> None:
        with pytest.raises(ValueError, match=r"unknown feature setting\(s\) \['n_mfc'\]"):
            feature_settings({"n_mfc": 20}, signal_length=96000)

    def test_from_omegaconf(self) -> None:
        omegaconf = pytest.importorskip("omegaconf")
        config = omegaconf.OmegaConf.create({"kind": "mfcc", "top_db": 80, "f_max": None})
        assert feature_settings(config, signal_length=96000) == FeatureSettings()
