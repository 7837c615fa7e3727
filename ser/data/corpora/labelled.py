"""What the user's own corpora share (a manifest file, a folder per label): labels named by
the data, renamed or merged by `dataset.label_map`, ordered by `dataset.classes`.

Unlike the published corpora these have no fixed classes, counts or signal length, and
are not in the registry: `dataset=manifest` and `dataset=folder` build them from their
settings (ser.data.own_data).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile

from ser.data.corpora.base import Corpus, CorpusError
from ser.data.manifest import Manifest, Utterance

# dataset.signal_length null: the length that covers this share of the utterances whole.
COVERED_SHARE = 0.95
# An utterance this many times longer than that length is refused as an outlier.
OUTLIER_FACTOR = 10
# How far a manifest's stated duration may be from its file's: rounding, not another unit.
DURATION_TOLERANCE_SECONDS = 0.5
DURATION_TOLERANCE_SHARE = 0.1


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


def header_seconds(path: str) -> float | None:
    """An audio file's length as its header states it; None where the header cannot be read
    (the feature extraction names such files) or the file is not a regular one."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        info = soundfile.info(path)
    except (OSError, RuntimeError, soundfile.SoundFileError):
        return None
    return info.frames / info.samplerate if info.samplerate > 0 and info.frames > 0 else None


def agrees(stated: float, seconds: float) -> bool:
    """Whether a row's stated duration is its file's (a rounded one, not milliseconds)."""
    return abs(stated - seconds) <= max(DURATION_TOLERANCE_SECONDS, DURATION_TOLERANCE_SHARE * seconds)


def covering_seconds(manifest: Manifest, share: float = COVERED_SHARE) -> float:
    """The duration that `share` of the utterances fit in whole (signal length null).

    From the audio headers; a row's stated duration must agree with its file's (a duration
    in milliseconds would choose a length a thousand times too long). The length is one of
    the utterances' own, never interpolated towards a longer one, and an utterance more than
    OUTLIER_FACTOR times longer is refused, named: one long recording among short clips
    must not set the length of every utterance (and the memory it takes).
    """
    lengths: list[tuple[float, Utterance]] = []
    for utterance in manifest.utterances:
        seconds = header_seconds(utterance.path)
        if seconds is None:
            continue
        if utterance.duration is not None and not agrees(utterance.duration, seconds):
            raise CorpusError(
                f"{where(utterance, manifest.root)}: duration {utterance.duration:g} s, but {utterance.path} lasts "
                f"{seconds:.2f} s (its header); expected the duration in seconds"
            )
        lengths.append((seconds, utterance))
    if not lengths:
        raise CorpusError(
            f"{manifest.corpus}: no readable durations to choose a signal length from; "
            f"set dataset.signal_length"
        )
    value = float(np.quantile([seconds for seconds, _ in lengths], share, method="inverted_cdf"))
    longest, culprit = max(lengths, key=lambda length: length[0])
    if longest > OUTLIER_FACTOR * value:
        origin = f" ({culprit.origin})" if culprit.origin else ""
        raise CorpusError(
            f"{culprit.path}{origin}: {longest:.1f} s long, while {round(share * 100)}% of the utterances last at "
            f"most {value:.2f} s (the length dataset.signal_length=null would give every utterance); cut it into "
            f"utterances or leave it out, or set dataset.signal_length"
        )
    return value
