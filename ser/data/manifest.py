"""The manifest: one row per utterance, the single source of labels and speakers."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Utterance:
    """One labelled recording of a corpus.

    `split`: train, val or test where the data fixes the protocol (a manifest's split
    column, `cv=predefined`); `duration`: seconds, where the data states it; `origin`:
    where the row was read ("FILE line N"), so that errors about it can name it.
    """

    path: str
    label: str
    speaker: str
    session: str | None = None
    text: str | None = None
    split: str | None = None
    duration: float | None = None
    origin: str | None = None

    def relative_to(self, root: Path) -> str:
        """The path relative to the corpus root, used in cache keys and reports."""
        try:
            return str(Path(self.path).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            return self.path


@dataclass
class Manifest:
    """The utterances of a corpus in the reference row order, with its class names."""

    corpus: str
    root: str
    class_names: list[str]
    utterances: list[Utterance] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def labels(self) -> list[int]:
        """Class indices in row order."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return [index[u.label] for u in self.utterances]

    @property
    def speakers(self) -> list[str]:
        return [u.speaker for u in self.utterances]

    def class_counts(self) -> dict[str, int]:
        counts = Counter(u.label for u in self.utterances)
        return {name: counts.get(name, 0) for name in self.class_names}

    def fingerprint(self) -> str:
        """A hash of what defines the data: every row (relative path, label, speaker,
        session, split, stated duration), in order, with each file's size and mtime.

        Any change to a file, a row or the order gives a new fingerprint, so cached
        features are never reused for a different corpus state, and a resumed run is
        refused other data (the identity of a run's data, `data_identity`).
        """
        digest = hashlib.sha256()
        digest.update(json.dumps([self.corpus, self.class_names]).encode())
        for u in self.utterances:
            try:
                stat = os.stat(u.path)
                size, mtime = stat.st_size, int(stat.st_mtime_ns)
            except OSError:
                size, mtime = -1, -1
            digest.update(
                json.dumps([
                    u.relative_to(Path(self.root)), u.label, u.speaker, u.session, u.split, u.duration, size, mtime,
                ]).encode()
            )
        return digest.hexdigest()[:16]
