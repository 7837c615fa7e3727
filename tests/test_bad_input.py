"""Bad input: each problem gives a message naming the file or path and what was expected.

Covers unreadable, truncated and empty WAVs, silence, stereo, other sample rates,
unknown label codes, missing directories, trees of the wrong corpus,
`dataset.on_bad_file=skip` (logged, listed in results.json) and the feature cache
(never half-written, never trusted when damaged).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from omegaconf import open_dict

from ser.data.audio import AudioFileError, load_audio
from ser.data.corpora import CorpusError, get_corpus
from ser.data.datamodule import CorpusDataModule
from ser.data.extraction import SilentAudioWarning
from tests.helpers import forged_files as forged
from tests.helpers.audio_files import deny, write_wav
from tests.helpers.config import compose_config, one_torch_thread
from tests.helpers.corpus_trees import (
    iemocap_block,
    make_casia_tree,
    make_emodb_tree,
    make_emovo_tree,
    make_iemocap_tree,
    make_ravdess_tree,
    make_savee_tree,
    ravdess_name,
)

GOOD_EMODB = [
    f"{speaker}a0{text}{letter}a.wav"
    for speaker in ("03", "08") for text in ("1", "2") for letter in "WLEAFNT"
]


def emodb_module(root: Path, tmp_path: Path, **kwargs) -> CorpusDataModule:
    settings = dict(
        corpus="emodb", root=str(root), features={}, cache_dir=str(tmp_path / "cache"),
        signal_length=1024, feature_device="cpu", load_threads=1, check_counts=False,
    )
    settings.update(kwargs)
    return CorpusDataModule(**settings)


def write_garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio at all, just some text " * 4)
    return path


def write_truncated(path: Path) -> Path:
    write_wav(path, seconds=0.05)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut short: the header promises more
    return path


def write_empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    return path


BAD_WRITERS = {"unreadable": write_garbage, "truncated": write_truncated, "empty": write_empty}


# ----------------------------------------------------------------------------- audio files


@pytest.mark.parametrize("kind", sorted(BAD_WRITERS))
def test_bad_wav_names_the_file(tmp_path: Path, kind: str) -> None:
    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    bad = BAD_WRITERS[kind](root / "wav" / "03a05Wa.wav")
    with pytest.raises(AudioFileError) as caught:
        emodb_module(root, tmp_path).prepare_data()
    message = str(caught.value)
    assert str(bad) in message and "expected" in message
    if kind == "truncated":
        assert "truncated" in message
    # No cache was written for the failed run, not even a temporary file.
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_skip_leaves_out_bad_files_and_logs_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    bad = sorted(str(BAD_WRITERS[kind](root / "wav" / f"03a05{letter}a.wav"))
                 for kind, letter in zip(sorted(BAD_WRITERS), "WLE", strict=True))
    module = emodb_module(root, tmp_path, on_bad_file="skip")
    with caplog.at_level(logging.WARNING, logger="ser.data.datamodule"):
        module.prepare_data()
    assert sorted(item["path"] for item in module.skipped_files) == bad
    assert all(item["reason"] for item in module.skipped_files)
    assert len(module.manifest) == len(GOOD_EMODB) == module.features.shape[0]
    assert all(u.path not in bad for u in module.manifest.utterances)
    assert "skipped 3 bad file(s)" in caplog.text and bad[0] in caplog.text


def test_every_read_failure_is_a_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Permission and absurd headers: each one stops an error run with its name, and a
    # skip run leaves it out, as it does a garbled file.
    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    wav = root / "wav"
    locked = write_wav(wav / "03a05Wa.wav")
    deny(monkeypatch, locked)
    bad = {
        locked: "cannot be read (Permission denied)",
        forged.wav_with_rate(wav / "03a05La.wav", 1_000_003): "header declares 1000003 Hz",
        forged.wav_with_channels(wav / "03a05Ea.wav", 200): "header declares 200",
    }
    with pytest.raises(AudioFileError, match=re.escape(f"{locked}: cannot be read (Permission denied)")):
        emodb_module(root, tmp_path).prepare_data()
    module = emodb_module(root, tmp_path, on_bad_file="skip")
    module.prepare_data()
    reasons = {item["path"]: item["reason"] for item in module.skipped_files}
    assert sorted(reasons) == sorted(map(str, bad))
    assert all(str(path) in reasons[str(path)] and part in reasons[str(path)] for path, part in bad.items())
    assert len(module.manifest) == len(GOOD_EMODB) == module.features.shape[0]


def test_cache_of_a_skip_run_is_not_trusted_by_an_error_run(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    bad = write_garbage(root / "wav" / "03a05Wa.wav")
    emodb_module(root, tmp_path, on_bad_file="skip").prepare_data()
    with pytest.raises(AudioFileError, match=re.escape(str(bad))):
        emodb_module(root, tmp_path).prepare_data()


def test_skipped_files_are_recorded_in_results_json(tmp_path: Path) -> None:
    from ser.training.engine import train

    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    bad = write_truncated(root / "wav" / "08a05Wa.wav")
    cfg = compose_config([
        "dataset=emodb", f"dataset.root={root}", "dataset.on_bad_file=skip",
        "dataset.signal_length=1024", "dataset.check_counts=false", "dataset.load_threads=1",
        "cv.folds=2", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "model=timnet", "model.net.num_blocks=1", "logger=none", "callbacks=none", "progress=false",
    ])
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.output_dir = str(tmp_path / "run")
    with one_torch_thread():
        train(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [item["path"] for item in results["skipped_files"]] == [str(bad)]
    assert "truncated" in results["skipped_files"][0]["reason"]
    assert results["num_utterances"] == len(GOOD_EMODB)


def test_silence_warns_with_the_file_name_and_is_kept(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    silent = root / "wav" / "03a05Wa.wav"
    soundfile.write(str(silent), np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    module = emodb_module(root, tmp_path)
    with pytest.warns(SilentAudioWarning, match=re.escape(str(silent))):
        module.prepare_data()
    assert str(silent) in [u.path for u in module.manifest.utterances]
    assert module.features.shape[0] == len(GOOD_EMODB) + 1
    assert torch.isfinite(module.features).all()


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    left = (0.2 * rng.standard_normal(2205)).astype(np.float32)
    stereo = np.stack([left, 0.5 * left], axis=1)
    soundfile.write(str(tmp_path / "stereo.wav"), stereo, 22050, subtype="FLOAT")
    soundfile.write(str(tmp_path / "mono.wav"), 0.75 * left, 22050, subtype="FLOAT")
    loaded = load_audio(tmp_path / "stereo.wav", 22050)
    assert loaded.ndim == 1
    np.testing.assert_allclose(loaded, load_audio(tmp_path / "mono.wav", 22050), atol=1e-6)


def test_other_sample_rates_are_resampled(tmp_path: Path) -> None:
    for rate in (8000, 44100, 48000):
        path = write_wav(tmp_path / f"clip{rate}.wav", seconds=0.1, sample_rate=rate)
        assert abs(len(load_audio(path, 22050)) - 2205) <= 1
    # A corpus mixing rates extracts features of one shape for every file.
    names = ["03a01Wa.wav", "03a01Fa.wav", "03a02Wa.wav"]
    root = tmp_path / "emodb"
    for name, rate in zip(names, (8000, 22050, 48000), strict=True):
        write_wav(root / "wav" / name, seconds=0.1, sample_rate=rate)
    module = emodb_module(root, tmp_path)
    module.prepare_data()
    assert module.features.shape == (3, 3, 39)


def test_missing_audio_file_is_named(tmp_path: Path) -> None:
    root = make_iemocap_tree(tmp_path / "iemocap")
    missing = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    missing.unlink()
    settings = dict(
        corpus="iemocap", root=str(root), features={}, signal_length=1024,
        feature_device="cpu", load_threads=1, check_counts=False,
    )
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        CorpusDataModule(**settings).prepare_data()
    module = CorpusDataModule(**settings, on_bad_file="skip")
    module.prepare_data()
    assert [item["path"] for item in module.skipped_files] == [str(missing)]


# ----------------------------------------------------------------------------- feature cache


def test_a_crash_while_writing_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    real_save = torch.save

    def crash(obj, target, *args, **kwargs):  # target: a path or an open file
        if hasattr(target, "write"):
            target.write(b"half a cache")
        else:
            Path(target).write_bytes(b"half a cache")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        emodb_module(root, tmp_path).prepare_data()
    assert list((tmp_path / "cache").iterdir()) == []  # neither the file nor a temporary

    monkeypatch.setattr(torch, "save", real_save)
    module = emodb_module(root, tmp_path)
    module.prepare_data()
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 1


def test_a_damaged_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_emodb_tree(tmp_path / "emodb", GOOD_EMODB)
    first = emodb_module(root, tmp_path)
    first.prepare_data()
    (path,) = (tmp_path / "cache").glob("features-*.pt")
    path.write_bytes(path.read_bytes()[:100])
    second = emodb_module(root, tmp_path)
    with caplog.at_level(logging.WARNING, logger="ser.data.datamodule"):
        second.prepare_data()
    assert "not using feature cache" in caplog.text and str(path) in caplog.text
    assert torch.equal(first.features, second.features)
    torch.load(path, weights_only=True)  # rewritten whole


# ----------------------------------------------------------------------------- labels and trees


def unknown_label_cases(tmp_path: Path) -> dict[str, tuple[Path, Path, str]]:
    """corpus -> (root, the culprit, expected message part)."""
    cases = {}
    root = make_emodb_tree(tmp_path / "emodb", ["03a01Wa.wav", "03a01Xa.wav"])
    cases["emodb"] = (root, root / "wav" / "03a01Xa.wav", "unknown emotion letter 'X'")
    root = make_casia_tree(tmp_path / "casia")
    write_wav(root / "wangzhe" / "bored" / "201.wav")
    cases["casia"] = (root, root / "wangzhe" / "bored", "unknown emotion folder")
    root = make_emovo_tree(tmp_path / "emovo")
    write_wav(root / "f1" / "xyz-f1-b1.wav")
    cases["emovo"] = (root, root / "f1" / "xyz-f1-b1.wav", "unknown emotion code 'xyz'")
    root = make_iemocap_tree(tmp_path / "iemocap")
    label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    with label_file.open("a") as handle:
        handle.write(iemocap_block(30.0, 31.0, "Ses01F_impro01_F020", "foo"))
    cases["iemocap"] = (root, label_file, "unknown emotion label 'foo'")
    root = make_ravdess_tree(tmp_path / "ravdess")
    culprit = write_wav(root / "Actor_01" / ravdess_name("09", 1))
    cases["ravdess"] = (root, culprit, "unknown emotion code '09'")
    root = make_savee_tree(tmp_path / "savee", flat=True)
    culprit = write_wav(root / "DC_x01.wav")
    cases["savee"] = (root, culprit, "unknown emotion code 'x'")
    return cases


@pytest.mark.parametrize("corpus", ["casia", "emodb", "emovo", "iemocap", "ravdess", "savee"])
def test_unknown_label_code_names_the_file(tmp_path: Path, corpus: str) -> None:
    root, culprit, part = unknown_label_cases(tmp_path)[corpus]
    with pytest.raises(CorpusError) as caught:
        get_corpus(corpus).build_manifest(root)
    message = str(caught.value)
    assert part in message and str(culprit) in message and "expected" in message


def test_savee_original_layout_unknown_code(tmp_path: Path) -> None:
    root = make_savee_tree(tmp_path / "savee", flat=False)
    culprit = write_wav(root / "AudioData" / "KL" / "sx01.wav")
    with pytest.raises(CorpusError, match=re.escape(f"unknown emotion code 'sx' in '{culprit}'")):
        get_corpus("savee").build_manifest(root)


@pytest.mark.parametrize("corpus", ["casia", "emodb", "emovo", "iemocap", "ravdess", "savee", "synthetic"])
def test_missing_directory_names_the_path(tmp_path: Path, corpus: str) -> None:
    missing = tmp_path / "not-downloaded"
    with pytest.raises(CorpusError, match=re.escape(f"'{missing}' does not exist") + ".*dataset.root"):
        get_corpus(corpus).build_manifest(missing)


def test_unset_root_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="dataset.root is not set for corpus 'ravdess'"):
        CorpusDataModule(corpus="ravdess", root=None, features={})


WRONG_TREES = [
    # (corpus asked for, tree actually given, what the message must say was expected)
    ("emodb", "ravdess", "no 'wav' folder"),
    ("ravdess", "emodb", "no Actor_01..Actor_24 folder"),
    ("casia", "savee", "unknown emotion folder"),
    ("casia", "emodb", "found audio directly in"),
    ("iemocap", "casia", "no Session1..Session5 folder"),
    ("emovo", "iemocap", "no speaker folder"),
    ("savee", "emovo", "neither AudioData/<speaker> folders"),
]


@pytest.mark.parametrize(("asked", "given", "part"), WRONG_TREES, ids=[f"{a}-at-{g}" for a, g, _ in WRONG_TREES])
def test_wrong_corpus_tree_is_recognised(tmp_path: Path, asked: str, given: str, part: str) -> None:
    builders = {
        "emodb": lambda root: make_emodb_tree(root, ["03a01Wa.wav", "08b01Nc.wav"]),
        "ravdess": make_ravdess_tree,
        "savee": lambda root: make_savee_tree(root, flat=False),
        "casia": make_casia_tree,
        "iemocap": make_iemocap_tree,
        "emovo": make_emovo_tree,
    }
    root = builders[given](tmp_path / "download")
    with pytest.raises(CorpusError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_corpus(asked).build_manifest(root)
    message = str(caught.value)
    assert part in message and str(root) in message
    assert f"expected {get_corpus(asked).display_name}'s layout" in message
    assert f"looks like a {get_corpus(given).display_name} copy (dataset={given})" in message


def test_bad_file_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_file must be 'error' or 'skip', got 'ignore'"):
        emodb_module(tmp_path, tmp_path, on_bad_file="ignore")
    with pytest.raises(ValueError, match="feature_device must be one of"):
        emodb_module(tmp_path, tmp_path, feature_device="tpu")


def test_root_one_level_too_high_points_at_the_corpus(tmp_path: Path) -> None:
    make_emodb_tree(tmp_path / "downloads" / "emodb", ["03a01Wa.wav"])
    with pytest.raises(CorpusError) as caught:
        get_corpus("emodb").build_manifest(tmp_path / "downloads")
    assert f"'{tmp_path / 'downloads' / 'emodb'}' looks like the corpus" in str(caught.value)


def test_an_unreadable_label_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_iemocap_tree(tmp_path / "iemocap")
    label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    deny(monkeypatch, label_file)
    with pytest.raises(CorpusError, match=re.escape(f"cannot read the label file '{label_file}' (Permission denied)")):
        get_corpus("iemocap").build_manifest(root)
