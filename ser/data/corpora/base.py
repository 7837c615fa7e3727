"""What every corpus layout shares: the `Corpus` base class, its errors, file helpers and
the registry of layouts by config name.

Each corpus is a `Corpus` subclass in a module of its own (ser.data.corpora.emodb, ...),
registered under its config name. `build_manifest` parses a downloaded copy as
docs/corpora.md describes and returns the rows in the reference order (class, then
natural file-name order), so the paper's folds can be reproduced.

Errors are `CorpusError`s whose message names the path and what was expected; when a
tree looks like another corpus (EMODB pointed at a RAVDESS copy) the message says so.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ser.data.manifest import Manifest, Utterance
from ser.errors import InputError

# The rate `Corpus.signal_length` counts samples at: the reference's (librosa's default).
CORPUS_RATE = 22050


class CorpusError(InputError):
    """A corpus directory that does not hold what its layout promises."""


def natural_key(text: str) -> list:
    """Sort key that orders 'a2' before 'a10' (natsort's default order for plain names)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


# The layouts by config name, in registration order (the order of ser.data.corpora's
# imports): `dataset.corpus` names one of these, nothing else is ever built.
CORPORA: dict[str, type[Corpus]] = {}


def register(cls: type[Corpus]) -> type[Corpus]:
    """Class decorator: make `cls` the layout of `dataset.corpus=<cls.name>`."""
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


def visible(path: Path) -> bool:
    # macOS archives carry `__MACOSX/` and `._name` resource forks next to the audio.
    return not path.name.startswith(".") and path.name != "__MACOSX"


def wav_files(directory: Path) -> list[Path]:
    """The visible `.wav` files (any case) directly inside `directory`, sorted by name."""
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and visible(p) and p.suffix.lower() == ".wav"
    )


def subdirectories(directory: Path) -> list[Path]:
    """The visible folders directly inside `directory`, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_dir() and visible(p))


def recognise(root: str | Path) -> list[str]:
    """Names of the corpora whose layout `root` looks like (cheap checks, no full walk)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        name for name, cls in CORPORA.items()
        if cls.detectable and cls.looks_like(root)
    ]


class Corpus:
    """A corpus layout. Subclasses set the class attributes and implement `utterances`."""

    name: ClassVar[str]
    # Name in messages and tables; empty: the config name in capitals ("EMODB").
    title: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]]
    # Counts of a complete copy per class; None where the corpus size is not fixed.
    expected_counts: ClassVar[dict[str, int] | None] = None
    # Utterances per speaker of a complete copy, where docs/corpora.md fixes them.
    expected_speaker_counts: ClassVar[dict[str, int] | None] = None
    # The per-corpus signal length (samples at CORPUS_RATE; None: the user's corpora, whose
    # length comes from the data) and TIM-Net's split seed (docs/reference.md).
    signal_length: ClassVar[int | None]
    split_seed: ClassVar[int]
    # Whether `recognise` reports this layout (the synthetic corpus reuses EMODB's).
    detectable: ClassVar[bool] = True
    # Whether cv=kfold refuses a class with fewer utterances than folds (the user's own
    # data, where such a class is most often a mistyped label); the published corpora
    # allow it (folds of one utterance are a protocol of their own).
    refuses_small_classes: ClassVar[bool] = False

    def __init__(self) -> None:
        # Files or labels left out on purpose by the last parse, with the reason.
        self.excluded: Counter[str] = Counter()

    # -- what subclasses provide ----------------------------------------------------------
    def utterances(self, root: Path) -> Iterable[Utterance]:
        raise NotImplementedError

    def layout_hint(self) -> str:
        return "see docs/corpora.md"

    def emotion_for(
        self,
        code: str,
        table: Mapping[str, str],
        path: Path,
        what: str = "emotion code",
        order: Callable[[str], Any] | None = None,
    ) -> str:
        """The class name a file's emotion code stands for; unknown codes name the file."""
        try:
            return table[code]
        except KeyError:
            raise CorpusError(
                f"{self.name}: unknown {what} {code!r} in {str(path)!r}; "
                f"expected one of {sorted(table, key=order)}"
            ) from None

    def name_error(self, path: Path, expected: str) -> CorpusError:
        """A file whose name breaks the layout; `expected` says what it should be."""
        return CorpusError(f"{self.name}: file name {str(path)!r} {expected} ({self.layout_hint()})")

    def folder_error(self, path: Path, names: str, lies_in: str) -> CorpusError:
        """A file whose name `names` a speaker other than the folder it `lies_in`."""
        return CorpusError(f"{self.name}: {str(path)!r} names {names} but lies in {lies_in}")

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        """Whether `root` has this corpus's layout, judged from a few names."""
        return False

    def sort_name(self, utterance: Utterance) -> str:
        """The file name the reference sorted on (natural order within a class)."""
        return Path(utterance.path).name

    # -- shared behaviour -----------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return self.title or self.name.upper()

    def layout_error(self, root: Path, problem: str) -> CorpusError:
        """A CorpusError naming the path, the expected layout and any recognised corpus."""
        message = f"{self.name}: {problem}; expected {self.display_name}'s layout {self.layout_hint()}"
        others = [name for name in recognise(root) if name != self.name]
        if others:
            message += (
                f". {str(root)!r} looks like a {CORPORA[others[0]]().display_name} copy "
                f"(dataset={others[0]})"
            )
        elif root.is_dir():
            # A common slip: dataset.root names the folder that holds the corpus folder.
            inner = [d for d in subdirectories(root)[:50] if self.looks_like(d)]
            if inner:
                message += f". {str(inner[0])!r} looks like the corpus: set dataset.root to it"
        return CorpusError(message)

    def build_manifest(self, root: str | Path, check_counts: bool = True) -> Manifest:
        """Parse `root`, order rows as the reference did, and check the counts."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise CorpusError(
                f"{self.name}: corpus directory {str(root)!r} does not exist or is not a "
                f"directory; set dataset.root to the folder you downloaded"
            )
        self.excluded = Counter()
        rows = list(self.utterances(root))
        if not rows:
            raise self.layout_error(root, f"found no utterances under {str(root)!r}")
        order = {name: i for i, name in enumerate(self.class_names)}
        rows.sort(
            key=lambda u: (
                order[u.label],
                natural_key(self.sort_name(u)),
                # Ties (CASIA's 201.wav exists once per speaker) by the path below root.
                natural_key(u.relative_to(root)),
            )
        )
        manifest = Manifest(self.name, str(root), list(self.class_names), rows)
        if check_counts:
            self.check_counts(manifest)
        return manifest

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
