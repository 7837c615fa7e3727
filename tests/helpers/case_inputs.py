"""What the bad-input rows share (tests/helpers/bad_input_cases.py and
untrusted_data_cases.py): the registry of each row's SETUP, the small corpora they write,
and the config a row's command composes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
from omegaconf import DictConfig, open_dict

from tests.helpers.audio_files import write_wav
from tests.helpers.config import compose_config
from tests.helpers.corpus_trees import make_emodb_tree

Placeholders = dict[str, str]
Setup = Callable[[Path, pytest.MonkeyPatch, str], Placeholders]
SETUPS: dict[str, Setup] = {}


def setup(*ids: str) -> Callable[[Setup], Setup]:
    def register(function: Setup) -> Setup:
        for row in ids:
            SETUPS[row] = function
        return function

    return register


def emodb_with(folder: Path, write: Callable[[Path], object], name: str = "03a01Wa.wav") -> Placeholders:
    """An EMODB copy with one good file and the bad `name` written by `write`."""
    root = make_emodb_tree(folder / "emodb", ["03a01Fa.wav"])
    write(root / "wav" / name)
    return {"{root}": str(root), "{file}": str(root / "wav" / name)}


def huge_samples(path: Path) -> Path:
    """A float WAV whose samples are finite but 1e30: its power spectrum overflows."""
    signal = np.full(1600, 1e30, np.float32)
    signal[::2] *= -1
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), signal, 16000, subtype="FLOAT")
    return path


def manifest_with(folder: Path, lines: list[str], name: str = "train.csv") -> Placeholders:
    """A manifest of `lines` beside six tiny clips a.wav .. f.wav."""
    mine = folder / "mine"
    for i, audio in enumerate("abcdef"):
        write_wav(mine / f"{audio}.wav", seed=i)
    path = mine / name
    path.write_text("\n".join(lines) + "\n")
    return {"{file}": str(path), "{root}": str(mine)}


def label_folders(folder: Path) -> Path:
    """A tiny `dataset=folder` corpus: two label folders of one clip each."""
    for i, label in enumerate(("happy", "sad")):
        write_wav(folder / "mine" / label / "clip.wav", seconds=0.1, seed=i)
    return folder / "mine"


def row_config(overrides: list[str], folder: Path) -> DictConfig:
    """The config of a row's command, writing into the row's own folder."""
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.data_dir = str(folder / "data")
        cfg.paths.output_dir = str(folder / "run")
    return cfg
