"""What the user's own corpora share (a manifest file, a folder per label): labels named by
the data, renamed or merged by `dataset.label_map`, ordered by `dataset.classes`.

Unlike the published corpora these have no fixed classes, counts or signal length, and
are not in the registry: `dataset=manifest` and `dataset=folder` build them from their
settings (ser.data.own_data).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile

from ser.data.corpora.base import Corpus, CorpusError
from ser.data.manifest import Manifest, Utterance

# dataset.signal_length null: the length that covers this share of the utterances whole.
COVERED_SHARE = 0.95


class LabelledCorpus(Corpus):
    """A corpus whose classes are the labels its rows carry; subclasses read the rows."""

    detectable = False
    refuses_small_classes = True
    # No published split: the one seed of the user's corpora, where cv.seed is null.
    split_seed = 0
    signal_length = None  # type: ignore[assignment]  # from the data (covering_seconds)

    def __init__(
        self, name: str, classes: Sequence[str] | None = None,
        label_map: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]  # an instance's name: dataset.corpus
        self.wanted = [str(c) for c in classes] if classes else None
        if self.wanted is not None and len(set(self.wanted)) != len(self.wanted):
            raise CorpusError(f"dataset.classes names a class twice: {self.wanted}")
        self.label_map = {str(k): (None if v is None else str(v)) for k, v in (label_map or {}).items()}
        self.class_names = tuple(self.wanted or ())  # type: ignore[misc]  # known after parsing

    @property
    def display_name(self) -> str:
        return self.name

    # -- what subclasses provide ----------------------------------------------------------
    def source(self, root: Path) -> str:
        """The file or folder the rows come from, as messages name it."""
        return str(root)

    def rows(self, root: Path) -> Iterable[Utterance]:
        raise NotImplementedError

    def ordered(self, rows: list[Utterance], class_names: Sequence[str]) -> list[Utterance]:
        """The rows in the order the folds see them (default: as read)."""
        return rows

    # -- shared -----------------------------------------------------------------------------
    def build_manifest(self, root: str | Path, check_counts: bool = True) -> Manifest:
        """Read the rows, apply `dataset.label_map`, and order the classes."""
        root = Path(root).expanduser()
        self.excluded.clear()
        source = self.source(root)
        read = list(self.rows(root))
        unknown = sorted(set(self.label_map) - {u.label for u in read})
        if unknown:
            raise CorpusError(
                f"dataset.label_map maps {unknown}, which no row of {source} has; its labels are "
                f"{sorted({u.label for u in read})}"
            )
        rows = []
        for utterance in read:
            label = self.label_map.get(utterance.label, utterance.label)
            if label is None:
                self.excluded[f"label {utterance.label!r} dropped by dataset.label_map"] += 1
                continue
            if label != utterance.label:
                self.excluded[f"label {utterance.label!r} renamed {label!r}"] += 1
            rows.append(utterance if label == utterance.label else _relabelled(utterance, label))
        if not rows:
            raise CorpusError(f"{source}: no utterances{' left after dataset.label_map' if read else ''}")
        classes = self._classes(rows, source)
        self.class_names = tuple(classes)  # type: ignore[misc]
        return Manifest(self.name, str(root), list(classes), self.ordered(rows, classes))

    def _classes(self, rows: list[Utterance], source: str) -> list[str]:
        labels = {u.label for u in rows}
        if self.wanted is None:
            return sorted(labels)
        for utterance in rows:
            if utterance.label not in self.wanted:
                raise CorpusError(
                    f"{where(utterance, source)}: label {utterance.label!r} is not one of dataset.classes "
                    f"{self.wanted}; add it there, or rename or drop it with dataset.label_map"
                )
        empty = [name for name in self.wanted if name not in labels]
        if empty:
            raise CorpusError(f"dataset.classes names {empty}, which no row of {source} has")
        return list(self.wanted)


def _relabelled(utterance: Utterance, label: str) -> Utterance:
    from dataclasses import replace

    return replace(utterance, label=label)


def where(utterance: Utterance, source: str) -> str:
    """`FILE line N` of a manifest row, else the audio file."""
    return utterance.origin or utterance.path or source


def covering_seconds(manifest: Manifest, share: float = COVERED_SHARE) -> float:
    """The duration that `share` of the utterances fit in whole (signal length null).

    From the rows' stated durations where every row has one, else from the audio
    headers (files whose header cannot be read are left to the feature extraction,
    which names them).
    """
    seconds = [u.duration for u in manifest.utterances]
    if any(s is None for s in seconds):
        seconds = []
        for utterance in manifest.utterances:
            try:
                info = soundfile.info(utterance.path)
            except (OSError, RuntimeError, soundfile.SoundFileError):
                continue
            if info.samplerate > 0 and info.frames > 0:
                seconds.append(info.frames / info.samplerate)
    if not seconds:
        raise CorpusError(
            f"{manifest.corpus}: no readable durations to choose a signal length from; "
            f"set dataset.signal_length"
        )
    value = float(np.quantile(np.asarray(seconds, dtype=np.float64), share))
    if not math.isfinite(value) or value <= 0:
        raise CorpusError(f"{manifest.corpus}: durations give no usable signal length; set dataset.signal_length")
    return value
