"""`features=ssl`: frame features of wav2vec 2.0 / HuBERT / WavLM models, nothing downloaded.

Most tests use shrunk architectures (tests/helpers/ssl_models.py: the bundle's conv
strides, a tiny transformer) with random weights saved as a local state dict; one runs
the real WavLM Base+ architecture to check the shape of its features.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torchaudio

from ser.data import ssl_features
from ser.data.feature_kinds import feature_settings
from ser.data.own_data import FolderDataModule
from ser.data.ssl_features import SSL_BUNDLES, SSLFeatureSettings, SSLWeightsError, frame_features
from ser.models import MSSENet, TIMNet
from tests.helpers.audio_files import write_wav
from tests.helpers.ssl_models import (
    TINY_LAYERS,
    TINY_WIDTH,
    save_random_weights,
    use_shrunk_bundles,
)


@pytest.fixture
def shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    use_shrunk_bundles(monkeypatch)
    yield
    ssl_features.loaded_model.cache_clear()


def test_the_bundle_list_is_torchaudios_self_supervised_models() -> None:
    for name in SSL_BUNDLES:
        bundle = ssl_features.bundle(name)
        assert isinstance(bundle, torchaudio.pipelines.Wav2Vec2Bundle)
        assert not isinstance(bundle, torchaudio.pipelines.Wav2Vec2ASRBundle)
        assert bundle.sample_rate == 16000
    # Anything else is refused before any attribute is looked up.
    for name in ("WAV2VEC2_ASR_BASE_960H", "CONVTASNET_BASE_LIBRI2MIX", "__class__", "get_model"):
        with pytest.raises(ValueError, match=f"features.model={name!r}: expected one of"):
            ssl_features.bundle(name)


def test_settings_from_the_config_at_the_bundles_rate() -> None:
    settings = feature_settings({"kind": "ssl"}, seconds=96000 / 22050)
    assert isinstance(settings, SSLFeatureSettings) and settings.model == "WAVLM_BASE_PLUS"
    assert settings.sample_rate == 16000 and settings.signal_length == 69660  # EMODB's 4.35 s
    assert settings.num_features == 768 and settings.num_frames == 217
    large = feature_settings({"kind": "ssl", "model": "WAV2VEC2_LARGE_LV60K", "layer": 23}, signal_length=16000)
    assert large.num_features == 1024 and large.num_frames == 49
    with pytest.raises(ValueError, match=r"features.layer=24: expected 0..23"):
        feature_settings({"kind": "ssl", "model": "WAVLM_LARGE", "layer": 24}, signal_length=16000)
    with pytest.raises(ValueError, match=r"unknown feature setting\(s\) \['n_mfcc'\] for features.kind=ssl"):
        feature_settings({"kind": "ssl", "n_mfcc": 39}, signal_length=16000)


@pytest.mark.parametrize("name", ["WAVLM_BASE_PLUS", "HUBERT_BASE", "WAV2VEC2_LARGE_LV60K"])
def test_layers_mean_and_batches(shrunk: None, name: str) -> None:
    torch.manual_seed(0)
    net = ssl_features.architecture(name).eval()
    waveforms = torch.randn(5, 8000)
    normalize = ssl_features.bundle(name)._normalize_waveform
    with torch.inference_mode():
        inputs = torch.nn.functional.layer_norm(waveforms, (8000,)) if normalize else waveforms
        outputs, _ = net.extract_features(inputs)
    assert len(outputs) == TINY_LAYERS
    device = torch.device("cpu")
    for layer in range(TINY_LAYERS):
        features = frame_features(net, waveforms, layer, normalize, batch_size=2, device=device)
        assert torch.allclose(features, outputs[layer], atol=1e-5)
    mean = frame_features(net, waveforms, "mean", normalize, batch_size=5, device=device)
    assert torch.allclose(mean, torch.stack(outputs).mean(0), atol=1e-5)
    # One utterance at a time gives what a batch gives.
    single = frame_features(net, waveforms, "mean", normalize, batch_size=1, device=device)
    assert torch.allclose(single, mean, atol=1e-5)
    assert mean.shape == (5, SSLFeatureSettings(model=name, signal_length=8000).num_frames, TINY_WIDTH)


def test_local_weights_are_loaded_and_keyed_by_their_bytes(shrunk: None, tmp_path: Path) -> None:
    weights = save_random_weights("WAVLM_BASE_PLUS", tmp_path / "a.pt", seed=1)
    settings = SSLFeatureSettings(weights=str(weights), layer=1, signal_length=8000)
    waveforms = torch.randn(3, 8000)
    torch.manual_seed(1)
    reference = ssl_features.architecture("WAVLM_BASE_PLUS").eval()
    expected = frame_features(reference, waveforms, 1, False, 8, torch.device("cpu"))
    assert torch.allclose(settings.extract(waveforms, "cpu"), expected, atol=1e-6)
    # The key follows the bytes, not the path; the layer and the model are in it too.
    shutil.copy(weights, tmp_path / "copy.pt")
    other = save_random_weights("WAVLM_BASE_PLUS", tmp_path / "b.pt", seed=2)
    assert SSLFeatureSettings(weights=str(tmp_path / "copy.pt"), layer=1, signal_length=8000).key() == settings.key()
    assert SSLFeatureSettings(weights=str(other), layer=1, signal_length=8000).key() != settings.key()
    assert SSLFeatureSettings(weights=str(weights), layer=2, signal_length=8000).key() != settings.key()
    assert SSLFeatureSettings(weights=str(weights), layer=1, signal_length=8000, batch_size=1).key() == settings.key()
    # A state dict of torchaudio's wrapped model (large bundles) loads too.
    wrapped = {f"model.{k}": v for k, v in torch.load(weights, weights_only=True).items()}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    features = SSLFeatureSettings(weights=str(tmp_path / "wrapped.pt"), layer=1, signal_length=8000).extract(waveforms)
    assert torch.allclose(features, expected, atol=1e-6)


def test_weights_of_another_model_are_refused_by_name(shrunk: None, tmp_path: Path) -> None:
    hubert = save_random_weights("HUBERT_BASE", tmp_path / "hubert.pt")
    settings = SSLFeatureSettings(model="WAVLM_BASE_PLUS", weights=str(hubert), signal_length=8000)
    with pytest.raises(SSLWeightsError, match=r"hubert.pt: not the weights of WAVLM_BASE_PLUS's model: parameters .* missing"):
        settings.extract(torch.randn(1, 8000))


def test_cached_download_is_used_without_weights(shrunk: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = ssl_features.cached_download("HUBERT_BASE")
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / "hubert_fairseq_base_ls960.pth"
    with pytest.raises(SSLWeightsError, match="no weights for HUBERT_BASE"):
        SSLFeatureSettings(model="HUBERT_BASE", signal_length=8000).key()
    save_random_weights("HUBERT_BASE", cached)
    settings = SSLFeatureSettings(model="HUBERT_BASE", signal_length=8000)
    assert ssl_features.weights_file(settings) == cached
    assert settings.extract(torch.randn(2, 8000)).shape == (2, 24, TINY_WIDTH)


def test_corpus_features_resampled_batched_and_cached(shrunk: None, tmp_path: Path) -> None:
    for i, label in enumerate(["happy", "happy", "sad", "sad", "sad"]):
        write_wav(tmp_path / "mine" / label / f"{i}.wav", seconds=0.5, sample_rate=44100, seed=i)
    weights = save_random_weights("WAVLM_BASE_PLUS", tmp_path / "w.pt")
    kwargs = dict(
        root=str(tmp_path / "mine"), features={"kind": "ssl", "weights": str(weights), "batch_size": 2},
        cache_dir=str(tmp_path / "cache"), feature_device="cpu", load_threads=1,
    )
    module = FolderDataModule(**kwargs)
    module.prepare_data()
    settings = module.feature_settings
    assert settings.sample_rate == 16000 and settings.signal_length == 8000  # 0.5 s at 16 kHz
    assert module.features.shape == (5, 24, TINY_WIDTH) and module.input_dim == TINY_WIDTH
    cached = list((tmp_path / "cache").glob("features-folder-*.pt"))
    assert len(cached) == 1 and settings.key() in cached[0].name
    again = FolderDataModule(**kwargs)
    again._extract = None  # a cache hit must not extract
    again.prepare_data()
    assert torch.equal(again.features, module.features)


@pytest.mark.parametrize("network", [MSSENet, TIMNet])
def test_both_networks_take_768_wide_frames(network: type) -> None:
    torch.manual_seed(0)
    net = network(num_classes=4, input_dim=768, num_blocks=2)
    x = torch.randn(2, 40, 768, requires_grad=True)
    logits = net(x)
    logits.sum().backward()
    assert logits.shape == (2, 4) and x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.slow
def test_the_real_wavlm_base_plus_architecture(tmp_path: Path) -> None:
    """The full-size architecture (random weights): 768-d frames at 50 per second."""
    weights = save_random_weights("WAVLM_BASE_PLUS", tmp_path / "wavlm.pt")
    settings = SSLFeatureSettings(weights=str(weights), layer=11, signal_length=16000, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = settings.extract(torch.randn(3, 16000), "cpu")
    assert features.shape == (3, settings.num_frames, settings.num_features) == (3, 49, 768)
    ssl_features.loaded_model.cache_clear()
