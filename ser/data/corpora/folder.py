"""A folder per label: `<root>/<label>/**/*.wav` (also .flac and .ogg).

The label is the name of the folder directly below the root; files may sit at any depth
below it. Hidden files and folders (a leading dot, macOS's `__MACOSX`), files that are
not audio and files outside a label folder are ignored and counted: the counts are
logged and shown by `python -m ser.data`. Speakers are unknown, so `cv=kfold` applies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ser.data.audio import special_file
from ser.data.corpora.base import CorpusError, natural_key
from ser.data.corpora.labelled import LabelledCorpus
from ser.data.manifest import Utterance

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


class FolderCorpus(LabelledCorpus):
    """The audio files below `<root>/<label>/` (`dataset=folder dataset.root=DIR`)."""

    def layout_hint(self) -> str:
        return "<root>/<label>/**/*.wav (also .flac, .ogg)"

    def rows(self, root: Path) -> Iterator[Utterance]:
        if not root.is_dir():
            raise self.layout_error(root, f"{str(root)!r} does not exist or is not a directory")
        found = 0
        for directory, folders, files in os.walk(root):
            depth = Path(directory).relative_to(root).parts
            # Hidden folders are not entered; their files are counted as hidden.
            for folder in [f for f in folders if hidden(f)]:
                self.excluded["hidden files"] += sum(len(names) for _, _, names in os.walk(Path(directory) / folder))
            folders[:] = sorted((f for f in folders if not hidden(f)), key=natural_key)
            for name in sorted(files, key=natural_key):
                if hidden(name):
                    self.excluded["hidden files"] += 1
                elif Path(name).suffix.lower() not in AUDIO_SUFFIXES:
                    self.excluded["non-audio files"] += 1
                elif not depth:
                    self.excluded["files outside a label folder"] += 1
                else:
                    found += 1
                    path = Path(directory) / name
                    special = special_file(path)
                    if special is not None:  # it would block the reading of every file after it
                        raise CorpusError(f"{path}: {special}, not a regular file; expected an audio file")
                    yield Utterance(str(path), depth[0], "")
        if not found:
            raise self.layout_error(root, f"found no audio files below a label folder of {str(root)!r}")
        if self.excluded:
            ignored = ", ".join(f"{n} {reason}" for reason, n in sorted(self.excluded.items()))
            log.info("%s: %d audio files in label folders; ignored %s", root, found, ignored)

    def ordered(self, rows: list[Utterance], class_names: Sequence[str]) -> list[Utterance]:
        """By class, then natural path order: the folds do not depend on the file system's listing."""
        order = {name: i for i, name in enumerate(class_names)}
        return sorted(rows, key=lambda u: (order[u.label], natural_key(u.path)))
