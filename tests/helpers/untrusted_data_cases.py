"""The bad inputs of issue 21 (a data file must not run code, leak secrets, mix datasets or
exhaust the machine): their SETUPs, registered with the other rows' (tests/helpers/
bad_input_cases.py runs them all). Used by the end-to-end tests too."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ser.tracking import results as results_file
from tests.helpers.audio_files import write_wav
from tests.helpers.case_inputs import (
    Placeholders,
    huge_samples,
    label_folders,
    manifest_with,
    row_config,
    setup,
)


def clips_manifest(folder: Path, count: int, seconds: float = 0.2) -> Placeholders:
    """A manifest of `count` clips of `seconds`, two classes."""
    mine = folder / "mine"
    for i in range(count):
        write_wav(mine / f"{i}.wav", seconds=seconds, seed=i)
    path = mine / "train.csv"
    path.write_text("path,label\n" + "".join(f"{i}.wav,{('happy', 'sad')[i % 2]}\n" for i in range(count)))
    return {"{file}": str(path), "{root}": str(mine)}


@setup("manifest-outlier")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    places = clips_manifest(folder, 20)
    long = write_wav(folder / "mine" / "long.wav", seconds=5.0)  # one recording among 0.2 s clips
    with Path(places["{file}"]).open("a") as manifest:
        manifest.write("long.wav,happy\n")
    return {**places, "{audio}": str(long)}


@setup("features-memory")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return clips_manifest(folder, 40, seconds=0.01)


def forged_checkpoint(folder: Path, **feature_settings: object) -> Placeholders:
    """A checkpoint of a tiny TIM-Net (random weights) whose feature settings are the
    defaults with `feature_settings` changed, and an audio file to classify."""
    from ser.models import registry

    path = folder / "forged.ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    net = {"name": "timnet", "num_classes": 2, "input_dim": 39, "num_blocks": 1, "implementation": "reference"}
    weights = registry.build_network(*registry.network_spec(net)).state_dict()
    metadata = {
        "class_names": ["happy", "sad"], "net": net,
        "feature_settings": {"kind": "mfcc", "signal_length": 4410, **feature_settings},
    }
    torch.save({"state_dict": {f"net.{k}": v for k, v in weights.items()}, "ser_metadata": metadata}, path)
    return {"{file}": str(path), "{audio}": str(write_wav(folder / "new.wav")), "{out}": str(folder / "model.pt")}


@setup("predict-output-audio", "predict-output-folder", "export-out-folder", "export-out-checkpoint")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return {**forged_checkpoint(folder), "{root}": str(folder)}


@setup("predict-huge-samples")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    places = forged_checkpoint(folder)
    return {**places, "{audio}": str(huge_samples(folder / "loud.wav"))}


FORGED_CHECKPOINTS = {
    "predict-n-fft": {"n_fft": 2**30},
    "predict-n-mels": {"n_mels": 1e8},
    "export-signal-length": {"signal_length": 1e11},
}
for _row, _settings in FORGED_CHECKPOINTS.items():
    setup(_row)(lambda folder, patch, row: forged_checkpoint(folder, **FORGED_CHECKPOINTS[row]))


def manifest_bytes(folder: Path, data: bytes, name: str = "train.csv") -> Placeholders:
    """A manifest of raw bytes beside the six clips a.wav .. f.wav."""
    places = manifest_with(folder, [], name=name)
    Path(places["{file}"]).write_bytes(data)
    return places


def looping(folder: Path) -> Placeholders:
    places = manifest_with(folder, ["path,label", "loop.wav,happy"])
    mine = Path(places["{root}"])
    (mine / "loop.wav").symlink_to(mine / "back.wav")
    (mine / "back.wav").symlink_to(mine / "loop.wav")
    return places


def piped(folder: Path) -> Placeholders:
    places = manifest_with(folder, ["path,label", "a.wav,happy", "pipe.wav,sad"])
    os.mkfifo(Path(places["{root}"]) / "pipe.wav")  # opening it would wait for a writer forever
    return places


UNREADABLE_MANIFESTS: dict[str, Callable[[Path], Placeholders]] = {
    "manifest-open-quote": lambda f: manifest_with(
        f, ["path,label,notes", "a.wav,happy,ok", 'b.wav,sad,"recorded outside', "c.wav,happy,ok", "d.wav,sad,ok"]
    ),
    "manifest-long-field": lambda f: manifest_with(f, ["path,label,notes", "a.wav,happy," + "x" * 200_000]),
    "manifest-long-path": lambda f: manifest_with(f, ["path,label", "a" * 5000 + ".wav,happy"]),
    "manifest-symlink-loop": looping,
    "manifest-fifo": piped,
    "manifest-deep-json": lambda f: manifest_bytes(
        f, b'{"path": "a.wav", "label": "happy"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", "train.jsonl"
    ),
    "manifest-nested-json": lambda f: manifest_bytes(
        f, b'{"path": "a.wav", "label": "happy"}\n' + b"[" * 60_000 + b"]" * 60_000 + b"\n", "train.jsonl"
    ),
    "manifest-utf16": lambda f: manifest_bytes(f, "path,label\na.wav,happy\n".encode("utf-16")),
    "manifest-latin1": lambda f: manifest_bytes(f, "path,label\na.wav,happy\nb.wav,café\n".encode("latin-1")),
}


@setup(*UNREADABLE_MANIFESTS)
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return UNREADABLE_MANIFESTS[row](folder)


@setup("folder-fifo")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    root = label_folders(folder)
    os.mkfifo(root / "sad" / "x.wav")
    return {"{root}": str(root), "{file}": str(root / "sad" / "x.wav")}


# -- the machine and the output directory ------------------------------------------------
@setup("no-gpu")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    patch.setattr(torch.cuda, "is_available", lambda: False)  # the row's machine has no GPU
    patch.setattr(torch.cuda, "device_count", lambda: 0)
    return {}


@setup("devices-cores", "num-workers-cores")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    from ser.settings import usable_cores

    return {"{cores}": str(usable_cores())}


def finished_run(folder: Path, overrides: list[str], **record: object) -> Path:
    """The row's output directory holding the record of a run of `overrides`."""
    from ser.training.config import config_hash

    run = folder / "run"
    header = results_file.header_path(run)
    header.parent.mkdir(parents=True)
    header.write_text(json.dumps({"config_hash": config_hash(row_config(overrides, folder)), **record}))
    return header


@setup("output-dir-callbacks")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return {"{file}": str(finished_run(folder, []))}  # trained with the default callbacks


@setup("rerun-other-data")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    places = manifest_with(folder, ["path,label", "a.wav,happy", "b.wav,happy", "c.wav,sad", "d.wav,sad"])
    overrides = ["dataset=manifest", f"dataset.path={places['{file}']}", "cv.folds=2"]
    header = finished_run(folder, overrides, data_hash="0" * 16)  # its folds trained on other data
    return {**places, "{header}": str(header)}
