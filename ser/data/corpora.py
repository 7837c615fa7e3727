"""Corpus layouts: how each corpus names its files, labels, speakers and counts.

Each corpus is a `Corpus` subclass registered under its config name. `build_manifest`
parses a downloaded copy exactly as shared/CORPORA.md describes and returns the rows in
the reference order (class, then natural file-name order), so the paper's folds can be
reproduced.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from ser.data.manifest import Manifest, Utterance


class CorpusError(ValueError):
    """A corpus directory that does not hold what its layout promises."""


def natural_key(text: str) -> list:
    """Sort key that orders 'a2' before 'a10' (natsort's default order for plain names)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


CORPORA: dict[str, type[Corpus]] = {}


def register(cls: type[Corpus]) -> type[Corpus]:
    CORPORA[cls.name] = cls
    return cls


def get_corpus(name: str) -> Corpus:
    """The corpus registered as `name`; unknown names list the known ones."""
    try:
        return CORPORA[name]()
    except KeyError:
        raise CorpusError(
            f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}"
        ) from None


class Corpus:
    """A corpus layout. Subclasses set the class attributes and implement `utterances`."""

    name: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]]
    # Counts of a complete copy per class; None where the corpus size is not fixed.
    expected_counts: ClassVar[dict[str, int] | None] = None
    # SPEC.md's per-corpus signal length (samples at 22 050 Hz) and TIM-Net's split seed.
    signal_length: ClassVar[int]
    split_seed: ClassVar[int]

    def utterances(self, root: Path) -> Iterable[Utterance]:
        raise NotImplementedError

    def build_manifest(self, root: str | Path, check_counts: bool = True) -> Manifest:
        """Parse `root`, order rows as the reference did, and check the counts."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise CorpusError(
                f"{self.name}: corpus directory {str(root)!r} does not exist or is not a "
                f"directory; set dataset.root to the folder you downloaded"
            )
        rows = list(self.utterances(root))
        if not rows:
            raise CorpusError(
                f"{self.name}: found no utterances under {str(root)!r}; "
                f"expected the layout described in the README ({self.layout_hint()})"
            )
        order = {name: i for i, name in enumerate(self.class_names)}
        rows.sort(key=lambda u: (order[u.label], natural_key(Path(u.path).name)))
        manifest = Manifest(self.name, str(root), list(self.class_names), rows)
        if check_counts:
            self.check_counts(manifest)
        return manifest

    def layout_hint(self) -> str:
        return "see shared/CORPORA.md"

    def check_counts(self, manifest: Manifest) -> None:
        """Warn, per class, where a copy differs from a complete one."""
        if self.expected_counts is None:
            return
        found = manifest.class_counts()
        differences = [
            f"{name}: found {found.get(name, 0)}, expected {expected}"
            for name, expected in self.expected_counts.items()
            if found.get(name, 0) != expected
        ]
        if differences:
            warnings.warn(
                f"{self.name} at {manifest.root!r} looks partial ({len(manifest)} of "
                f"{sum(self.expected_counts.values())} utterances): " + "; ".join(differences),
                stacklevel=2,
            )


@register
class EmoDB(Corpus):
    """Berlin EMODB: `<root>/wav/<speaker:2><text:3><emotion letter><version>.wav`."""

    name = "emodb"
    class_names = ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad")
    # In the file names A is fear (Angst), W is anger (Wut).
    letters: ClassVar[dict[str, str]] = {
        "W": "angry", "L": "boredom", "E": "disgust", "A": "fear",
        "F": "happy", "N": "neutral", "T": "sad",
    }
    expected_counts = {
        "angry": 127, "boredom": 81, "disgust": 46, "fear": 69,
        "happy": 71, "neutral": 79, "sad": 62,
    }
    signal_length = 96000
    split_seed = 46
    pattern = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])\.wav$")

    def layout_hint(self) -> str:
        return "<root>/wav/03a01Fa.wav: speaker, text code, emotion letter, version"

    def utterances(self, root: Path) -> Iterable[Utterance]:
        wav_dir = root / "wav"
        if not wav_dir.is_dir():
            raise CorpusError(
                f"{self.name}: expected a 'wav' folder inside {str(root)!r} "
                f"({self.layout_hint()})"
            )
        for path in sorted(wav_dir.glob("*.wav")):
            match = self.pattern.match(path.name)
            if match is None:
                raise CorpusError(
                    f"{self.name}: file name {str(path)!r} does not follow EMODB's pattern "
                    f"({self.layout_hint()})"
                )
            speaker, text, letter, _version = match.groups()
            if letter not in self.letters:
                raise CorpusError(
                    f"{self.name}: unknown emotion letter {letter!r} in {str(path)!r}; "
                    f"expected one of {sorted(self.letters)}"
                )
            yield Utterance(str(path), self.letters[letter], speaker, text=text)


@register
class Synthetic(EmoDB):
    """The generated default corpus: EMODB's layout and parsing, its own size."""

    name = "synthetic"
    expected_counts = None
    split_seed = 46
