"""IEMOCAP, 4 classes: labels from the evaluators' files, audio per dialog."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, CorpusError, register, visible
from ser.data.manifest import Utterance


@register
class Iemocap(Corpus):
    """IEMOCAP, 4 classes: labels from EmoEvaluation files, audio under sentences/wav.

    Keeps ang, hap, exc, sad, neu with exc merged into happy. The speaker is the session
    plus the gender letter that starts the utterance id's last part: in
    `Ses01F_impro01_M013` the speaker is session 1's male actor (the `F` in `Ses01F`
    names the dialog's recording side, not the speaker).
    """

    name = "iemocap"
    class_names = ("angry", "happy", "neutral", "sad")
    kept: ClassVar[dict[str, str]] = {
        "ang": "angry", "hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral",
    }
    # Every other label the evaluators used; these rows are left out, not errors.
    dropped: ClassVar[frozenset[str]] = frozenset(
        {"fru", "sur", "fea", "dis", "oth", "xxx"}
    )
    expected_counts = {"angry": 1103, "happy": 595 + 1041, "neutral": 1708, "sad": 1084}
    signal_length = 310000
    split_seed = 16
    sessions: ClassVar[tuple[str, ...]] = tuple(f"Session{n}" for n in range(1, 6))
    time_range = re.compile(r"^\[\s*\d+(?:\.\d*)?\s*-\s*\d+(?:\.\d*)?\s*\]$")
    utterance_id = re.compile(r"^Ses(\d\d)[FM]_\S+_([FM])\w*$")

    def layout_hint(self) -> str:
        return (
            "<root>/Session{1..5}/dialog/EmoEvaluation/*.txt with lines "
            "'[start - end]<TAB><utterance id><TAB><label><TAB>[V, A, D]', audio in "
            "<root>/Session{n}/sentences/wav/<dialog id>/<utterance id>.wav"
        )

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return any((root / session).is_dir() for session in cls.sessions)

    def utterances(self, root: Path) -> Iterator[Utterance]:
        sessions = [root / s for s in self.sessions if (root / s).is_dir()]
        if not sessions:
            raise self.layout_error(root, f"no Session1..Session5 folder inside {str(root)!r}")
        seen: dict[str, Path] = {}
        for session_dir in sessions:
            label_dir = session_dir / "dialog" / "EmoEvaluation"
            if not label_dir.is_dir():
                raise CorpusError(
                    f"{self.name}: label folder {str(label_dir)!r} is missing; expected the "
                    f"EmoEvaluation *.txt files of {session_dir.name} ({self.layout_hint()})"
                )
            label_files = sorted(
                p for p in label_dir.iterdir()
                if p.is_file() and visible(p) and p.suffix == ".txt"
            )
            if not label_files:
                raise CorpusError(
                    f"{self.name}: no *.txt label file in {str(label_dir)!r} "
                    f"({self.layout_hint()})"
                )
            for label_file in label_files:
                for utterance_id, code, line in self._labelled(label_file):
                    yield from self._row(root, session_dir, label_file, line, utterance_id, code, seen)

    def _row(
        self, root: Path, session_dir: Path, label_file: Path, line: int, utterance_id: str,
        code: str, seen: dict[str, Path],
    ) -> Iterator[Utterance]:
        where = f"{str(label_file)!r} line {line}"
        match = self.utterance_id.match(utterance_id)
        if match is None:
            raise CorpusError(
                f"{self.name}: utterance id {utterance_id!r} at {where} is not of the form "
                f"Ses01F_impro01_F000"
            )
        session_number, gender = int(match.group(1)), match.group(2)
        session = f"Session{session_number}"
        if session != session_dir.name:
            raise CorpusError(
                f"{self.name}: utterance {utterance_id!r} at {where} belongs to {session}, "
                f"not {session_dir.name}"
            )
        if code not in self.kept:
            if code not in self.dropped:
                raise CorpusError(
                    f"{self.name}: unknown emotion label {code!r} for {utterance_id!r} at "
                    f"{where}; expected one of {sorted(self.kept.keys() | self.dropped)}"
                )
            self.excluded[f"label {code}"] += 1
            return
        if utterance_id in seen:
            raise CorpusError(
                f"{self.name}: utterance {utterance_id!r} is labelled twice, in "
                f"{str(seen[utterance_id])!r} and {where}"
            )
        seen[utterance_id] = label_file
        if code == "exc":
            self.excluded["exc merged into happy"] += 1
        dialog = utterance_id.rsplit("_", 1)[0]
        path = session_dir / "sentences" / "wav" / dialog / f"{utterance_id}.wav"
        yield Utterance(str(path), self.kept[code], f"{session}_{gender}", session=session)

    def _labelled(self, label_file: Path) -> Iterator[tuple[str, str, int]]:
        """(utterance id, label code, line number) of each utterance line of a label file."""
        try:
            handle = label_file.open(encoding="utf-8", errors="replace")
        except OSError as error:
            raise CorpusError(
                f"{self.name}: cannot read the label file {str(label_file)!r} ({error.strerror or error})"
            ) from error
        with handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.startswith("["):
                    continue  # headers, blank lines and the evaluators' C-/A- lines
                parts = line.split("\t")
                if (
                    len(parts) < 4
                    or not self.time_range.match(parts[0].strip())
                    or not parts[3].strip().startswith("[")
                ):
                    raise CorpusError(
                        f"{self.name}: line {number} of {str(label_file)!r} is not of the form "
                        f"'[start - end]<TAB><utterance id><TAB><label><TAB>[V, A, D]': {line!r}"
                    )
                yield parts[1].strip(), parts[2].strip(), number
