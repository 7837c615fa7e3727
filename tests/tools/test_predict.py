"""`python -m ser.tools.predict`: a checkpoint alone classifies new audio; bad input gets one clear line."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from ser.data.feature_kinds import feature_weights_sha256
from ser.data.features import FeatureSettings
from ser.data.ssl_features import SSLFeatureSettings
from ser.tools.inference import (
    CheckpointError,
    find_audio_files,
    load_checkpoint,
    predict_files,
    read_checkpoint,
    trained_feature_model,
)
from ser.tools.predict import main
from tests.helpers.audio_files import write_noise
from tests.helpers.cli_runs import run_predict, selected_cases, started_together
from tests.helpers.config import TINY, compose_config, typed
from tests.helpers.ssl_models import save_random_weights, use_shrunk_bundles

CLASS_NAMES = ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"]


def test_predict_gives_probabilities_with_the_checkpoints_class_names(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = write_noise(tmp_path / "noise.wav")
    output = tmp_path / "out" / "predictions.csv"
    predictions = main([f"checkpoint={trained_checkpoint}", f"audio={audio}", f"output={output}"])
    assert len(predictions) == 1
    probabilities = predictions[0].probabilities
    assert probabilities.shape == (len(CLASS_NAMES),)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert (probabilities >= 0).all()
    printed = capsys.readouterr().out
    assert all(name in printed for name in CLASS_NAMES)
    with output.open(newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["path", "predicted", *CLASS_NAMES]
    assert len(rows) == 2
    assert rows[1][0] == str(audio)
    assert rows[1][1] == CLASS_NAMES[int(np.argmax(probabilities))]
    assert sum(float(p) for p in rows[1][2:]) == pytest.approx(1.0, abs=1e-4)


def test_a_directory_is_searched_recursively_in_natural_order(tmp_path: Path) -> None:
    for name in ("b10.wav", "b2.wav", "sub/a1.flac", "sub/c.OGG"):
        write_noise(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not audio")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)]
    assert found == ["b2.wav", "b10.wav", "sub/a1.flac", "sub/c.OGG"]


def test_predictions_equal_the_networks_output_on_the_training_features(
    trained_checkpoint: Path, data_dir: Path
) -> None:
    # Feature settings from the checkpoint must reproduce the DataModule's features.
    from ser.training.build import build_datamodule

    cfg = compose_config(TINY + ["logger=none"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(data_dir / "unused")
    datamodule = build_datamodule(typed(cfg))
    loaded = load_checkpoint(trained_checkpoint)
    rows = [0, 5, 11]
    files = [Path(datamodule.manifest.utterances[i].path) for i in rows]
    predicted = np.stack([p.probabilities for p in predict_files(loaded, files, batch_size=2)])
    with torch.no_grad():
        expected = torch.softmax(loaded.net(datamodule.features[rows]), dim=1).numpy()
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    assert loaded.class_names == CLASS_NAMES
    assert loaded.feature_settings.signal_length == 11025


def bad_case(kind: str, tmp_path: Path, checkpoint: Path) -> tuple[Path, Path, Path]:
    """(checkpoint, audio, culprit) for one kind of bad input."""
    audio = write_noise(tmp_path / "ok.wav")
    if kind == "missing audio":
        return checkpoint, tmp_path / "absent.wav", tmp_path / "absent.wav"
    if kind == "non-audio file":
        text = tmp_path / "speech.wav"
        text.write_text("this is text, not a WAV file\n")
        return checkpoint, text, text
    if kind == "missing checkpoint":
        return tmp_path / "absent.ckpt", audio, tmp_path / "absent.ckpt"
    if kind == "non-torch checkpoint":
        other = tmp_path / "model.ckpt"
        other.write_text("name,value\nlr,0.001\n")
        return other, audio, other
    if kind == "random torch dict":
        other = tmp_path / "weights.pt"
        torch.save({"weights": torch.randn(3, 3), "epoch": 4}, other)
        return other, audio, other
    if kind == "lightning checkpoint without ser_metadata":
        checkpoint_dict = torch.load(checkpoint, weights_only=True)
        del checkpoint_dict["ser_metadata"]
        other = tmp_path / "plain_lightning.ckpt"
        torch.save(checkpoint_dict, other)
        return other, audio, other
    raise AssertionError(kind)


def predicted(kind: str, folder: Path, trained: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`ser-predict` on the bad input `kind`, written into `folder`: (its culprit, the process)."""
    checkpoint, audio, culprit = bad_case(kind, folder, trained)
    return culprit, run_predict(f"checkpoint={checkpoint}", f"audio={audio}")


@pytest.fixture(scope="module")
def bad_inputs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_checkpoint: Path
) -> Iterator[dict]:
    """The ser-predict processes of the test below, started together (two at a time), each
    on its bad input in a folder of its own: {case id: (culprit, the finished process)}."""
    cases = selected_cases(request, test_bad_input_gets_one_clear_line_and_exit_code_2)
    commands = {
        case: partial(predicted, params["kind"], tmp_path_factory.mktemp("bad"), trained_checkpoint)
        for case, params in cases.items()
    }
    with started_together(commands) as runs:
        yield runs


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing audio", "audio not found"),
        ("non-audio file", "expected an audio file"),
        ("missing checkpoint", "checkpoint not found"),
        ("non-torch checkpoint", "not a PyTorch checkpoint"),
        ("random torch dict", "has no 'state_dict'"),
        ("lightning checkpoint without ser_metadata", "without 'ser_metadata'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_code_2(
    kind: str, expected: str, bad_inputs: dict, request: pytest.FixtureRequest
) -> None:
    culprit, result = bad_inputs[request.node.callspec.id].result()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(culprit) in lines[0]
    assert expected in lines[0]
    assert "expected" in lines[0]


def test_checkpoints_holding_arbitrary_objects_are_not_unpickled(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["callback"] = Path("/tmp")  # any non-allow-listed class
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(checkpoint, unsafe)
    with pytest.raises(CheckpointError, match="pickled objects"):
        read_checkpoint(unsafe)


def test_only_networks_of_the_package_are_instantiated(trained_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["ser_metadata"]["net"]["_target_"] = "os.system"
    forged = tmp_path / "forged.ckpt"
    torch.save(checkpoint, forged)
    with pytest.raises(CheckpointError, match="refusing to instantiate"):
        load_checkpoint(forged)


def test_unknown_and_missing_arguments_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["audio=x.wav"])
    assert exit_info.value.code == 2
    assert "checkpoint=..." in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["checkpoint=a", "audio=b", "colour=red"])
    assert "colour" in capsys.readouterr().err


def test_ssl_features_come_from_the_weights_training_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A `features=ssl` checkpoint records its feature model's sha256: prediction loads the
    file training read, or `feature_weights=PATH`, and refuses other bytes by name."""
    use_shrunk_bundles(monkeypatch)
    checkpoint = tmp_path / "run.ckpt"
    weights = save_random_weights("WAVLM_BASE_PLUS", tmp_path / "wavlm.pt", seed=1)
    settings = SSLFeatureSettings(weights=str(weights), signal_length=8000)
    recorded = feature_weights_sha256(settings)
    assert recorded == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert feature_weights_sha256(FeatureSettings()) is None  # MFCCs need no weights
    assert trained_feature_model(checkpoint, settings, recorded, None) == settings
    # Moved to another machine: the recorded path is gone; feature_weights= finds them.
    moved = tmp_path / "elsewhere" / "wavlm.pt"
    moved.parent.mkdir()
    weights.rename(moved)
    with pytest.raises(CheckpointError, match=r"run.ckpt: .*file not found.*feature_weights=PATH"):
        trained_feature_model(checkpoint, settings, recorded, None)
    assert trained_feature_model(checkpoint, settings, recorded, moved).weights == str(moved)
    # Other weights under the recorded name would give other features: refused.
    save_random_weights("WAVLM_BASE_PLUS", weights, seed=2)
    with pytest.raises(CheckpointError, match=rf"sha256 {recorded[:16]}, but {weights} has sha256"):
        trained_feature_model(checkpoint, settings, recorded, None)
