"""The synthetic corpus on disk: a generated stand-in for EMODB in EMODB's layout.

The default training job needs a corpus that every user has, so this module writes one
from the voice of ser.data.synthetic.voice. Files are written at ``sample_rate`` (16 kHz
by default) and go through the same loading and resampling path as real recordings.

Layout: ``<root>/wav/<speaker><text><emotion><version>.wav`` (e.g. ``03a01Wa.wav``), plus
``<root>/synthetic.json`` recording the settings; the marker is written last, so a
directory with a matching marker is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ser.data.synthetic.voice import SPEAKERS, synthesise, text_plan
from ser.errors import ConfigError
from ser.tracking.atomic import exclusive_lock

# Bump when the synthesis changes, so that cached corpora (and features) are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic.json"
_MARKER_FORMAT = "ser-synthetic-emodb"

# EMODB's emotion letters (German initials) in EMODB's reference class order.
EMOTION_LETTERS: dict[str, str] = {
    "anger": "W",
    "boredom": "L",
    "disgust": "E",
    "fear": "A",
    "happiness": "F",
    "neutral": "N",
    "sadness": "T",
}
# EMODB's ten speaker codes and text codes.
SPEAKER_CODES = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
TEXT_CODES = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
_VERSION_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class SyntheticCorpusSettings:
    """What defines a generated corpus; equal settings give byte-identical files.

    ``variability`` scales how far each utterance strays from its class's prosody:
    0 makes the classes trivially separable, 1 is the default, larger overlaps them more.
    ``snr_db`` is the background noise level below neutral speech (quiet classes sit
    closer to the noise, as in real recordings).
    """

    num_speakers: int = 4
    utterances_per_class_per_speaker: int = 10
    seconds: float = 1.5
    sample_rate: int = 16000
    seed: int = 0
    snr_db: float = 25.0
    variability: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.num_speakers <= len(SPEAKER_CODES):
            raise ConfigError(
                f"SyntheticCorpusSettings.num_speakers must be 1..{len(SPEAKER_CODES)}, "
                f"got {self.num_speakers}"
            )
        limit = len(TEXT_CODES) * len(_VERSION_LETTERS)
        if not 1 <= self.utterances_per_class_per_speaker <= limit:
            raise ConfigError(
                "SyntheticCorpusSettings.utterances_per_class_per_speaker must be "
                f"1..{limit}, got {self.utterances_per_class_per_speaker}"
            )
        if not 0.5 <= self.seconds <= 10.0:
            raise ConfigError(f"SyntheticCorpusSettings.seconds must be 0.5..10, got {self.seconds}")
        if self.sample_rate < 8000:
            raise ConfigError(
                f"SyntheticCorpusSettings.sample_rate must be at least 8000, got {self.sample_rate}"
            )
        if self.variability < 0:
            raise ConfigError(
                f"SyntheticCorpusSettings.variability must be >= 0, got {self.variability}"
            )

    @property
    def num_utterances(self) -> int:
        return self.num_speakers * len(EMOTION_LETTERS) * self.utterances_per_class_per_speaker


def utterance_names(settings: SyntheticCorpusSettings) -> list[str]:
    """The file names the settings produce, in generation order."""
    names = []
    for speaker in SPEAKER_CODES[: settings.num_speakers]:
        for letter in EMOTION_LETTERS.values():
            for j in range(settings.utterances_per_class_per_speaker):
                text = TEXT_CODES[j % len(TEXT_CODES)]
                version = _VERSION_LETTERS[j // len(TEXT_CODES)]
                names.append(f"{speaker}{text}{letter}{version}.wav")
    return names


def generate_corpus(root: str | os.PathLike[str], settings: SyntheticCorpusSettings) -> list[Path]:
    """Write the corpus under ``root`` (``root/wav/*.wav`` then the marker); return the files.

    Overwrites files of the same names; use :func:`ensure_corpus` to reuse or replace a
    corpus safely.
    """
    root = Path(root)
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    texts = [text_plan(settings.seed, t) for t in range(len(TEXT_CODES))]
    paths = []
    emotions = list(EMOTION_LETTERS)
    names = iter(utterance_names(settings))
    for s in range(settings.num_speakers):
        for e, emotion in enumerate(emotions):
            for j in range(settings.utterances_per_class_per_speaker):
                # One generator per utterance: a file never depends on the others.
                rng = np.random.default_rng([settings.seed, s, e, j])
                audio = synthesise(
                    rng, SPEAKERS[s], emotion, texts[j % len(TEXT_CODES)],
                    sample_rate=settings.sample_rate, seconds=settings.seconds,
                    variability=settings.variability, snr_db=settings.snr_db,
                )
                path = wav_dir / next(names)
                soundfile.write(str(path), audio, settings.sample_rate, subtype="PCM_16")
                paths.append(path)
    _write_marker(root, settings)
    return paths


def ensure_corpus(root: str | os.PathLike[str], settings: SyntheticCorpusSettings) -> list[Path]:
    """Return the corpus files under ``root``, generating them first when needed.

    A corpus whose marker matches ``settings`` (and this generator version) is reused.
    Otherwise it is generated into a fresh ``<root>.tmp-*`` sibling and renamed into
    place, so ``root`` never holds a half-written corpus. A non-empty ``root`` without a
    marker is not ours and is never replaced.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Serialises generation across processes (DDP ranks, parallel Hydra multirun jobs).
    with exclusive_lock(root):
        if _marker_matches(root, settings):
            return [root / "wav" / name for name in sorted(utterance_names(settings))]
        if root.exists() and not (root / MARKER_NAME).exists() and any(root.iterdir()):
            raise FileExistsError(
                f"{root} holds files but no {MARKER_NAME}; refusing to replace it with a "
                "synthetic corpus (choose an empty or new directory)"
            )
        staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-", dir=root.parent))
        try:
            generate_corpus(staging, settings)
            if root.exists():
                # Two renames: the old corpus leaves, then the complete new one arrives.
                retired = Path(tempfile.mkdtemp(prefix=f"{root.name}.old-", dir=root.parent))
                os.replace(root, retired / root.name)
                os.replace(staging, root)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, root)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return [root / "wav" / name for name in sorted(utterance_names(settings))]


def _marker(settings: SyntheticCorpusSettings) -> dict:
    return {
        "format": _MARKER_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "settings": dataclasses.asdict(settings),
    }


def _write_marker(root: Path, settings: SyntheticCorpusSettings) -> None:
    text = json.dumps(_marker(settings), indent=2, sort_keys=True) + "\n"
    (root / MARKER_NAME).write_text(text, encoding="utf-8")


def _marker_matches(root: Path, settings: SyntheticCorpusSettings) -> bool:
    try:
        recorded = json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded != json.loads(json.dumps(_marker(settings))):
        return False
    # A matching marker with files deleted since is not a usable corpus.
    return all((root / "wav" / name).is_file() for name in utterance_names(settings))


