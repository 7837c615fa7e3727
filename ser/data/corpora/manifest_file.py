"""A manifest of the user's corpus: a CSV or JSONL file with one row per utterance.

Columns: `path` and `label` (required); `speaker`, `session`, `split` (train, val or
test) and `duration` (seconds) optional; any other column is ignored. Paths are
relative to the manifest's folder (absolute ones are kept). Rows keep the file's order,
which the folds of `cv=kfold` depend on. Every error names the file and the line.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ser.data.audio import MAX_SECONDS
from ser.data.corpora.base import CorpusError
from ser.data.corpora.labelled import LabelledCorpus
from ser.data.manifest import Utterance

REQUIRED = ("path", "label")
OPTIONAL = ("speaker", "session", "split", "duration")
SPLITS = ("train", "val", "test")
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


class ManifestCorpus(LabelledCorpus):
    """The rows of a manifest file (`dataset=manifest dataset.path=FILE`)."""

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser().resolve()

    def layout_hint(self) -> str:
        return "a CSV or JSONL manifest with columns path, label [, speaker, session, split, duration]"

    def source(self, root: Path) -> str:
        return str(self.path)

    def rows(self, root: Path) -> Iterator[Utterance]:
        if not self.path.is_file():
            raise CorpusError(f"manifest not found: {self.path} (set dataset.path=FILE.csv or FILE.jsonl)")
        kind = FORMATS.get(self.path.suffix.lower())
        if kind is None:
            raise CorpusError(f"{self.path}: expected a .csv or .jsonl manifest, got {self.path.suffix or 'no suffix'!r}")
        records = self._csv() if kind == "csv" else self._jsonl()
        first_line: dict[Path, int] = {}
        for line, record in records:
            utterance = self._utterance(line, record)
            audio = Path(utterance.path)
            if audio in first_line:
                raise CorpusError(
                    f"{self.path} line {line}: duplicate path {record['path']!r} (first on line {first_line[audio]})"
                )
            first_line[audio] = line
            yield utterance

    def _csv(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self._open() as handle:
            reader = csv.DictReader(handle)
            self._check_columns(reader.fieldnames or [], "header")
            for record in reader:
                if not any((value or "").strip() for value in record.values() if isinstance(value, str)):
                    continue  # a blank line
                yield reader.line_num, record

    def _jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self._open() as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{self.path} line {line}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise CorpusError(f"{self.path} line {line}: expected a JSON object per line, got {type(record).__name__}")
                self._check_columns(list(record), f"line {line}")
                yield line, record

    def _open(self):
        try:
            return self.path.open(encoding="utf-8-sig", newline="")
        except OSError as error:
            raise CorpusError(f"{self.path}: cannot be read ({error.strerror or error})") from error

    def _check_columns(self, columns: list[str], where: str) -> None:
        missing = [name for name in REQUIRED if name not in columns]
        if missing:
            raise CorpusError(
                f"{self.path} {where}: no {' or '.join(repr(m) for m in missing)} column; expected "
                f"{', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)}), found {columns}"
            )

    def _utterance(self, line: int, record: dict[str, Any]) -> Utterance:
        at = f"{self.path} line {line}"
        path, label = _text(record.get("path")), _text(record.get("label"))
        if not path:
            raise CorpusError(f"{at}: empty path")
        if not label:
            raise CorpusError(f"{at}: empty label")
        audio = Path(path).expanduser()
        audio = (audio if audio.is_absolute() else self.path.parent / audio).resolve()
        if not audio.is_file():
            raise CorpusError(f"{at}: audio file not found: {audio}")
        split = _text(record.get("split")).lower() or None
        if split is not None and split not in SPLITS:
            raise CorpusError(f"{at}: split {record.get('split')!r} is not one of {', '.join(SPLITS)}")
        return Utterance(
            str(audio), label, _text(record.get("speaker")), session=_text(record.get("session")) or None,
            split=split, duration=self._duration(at, record.get("duration")), origin=at,
        )

    @staticmethod
    def _duration(at: str, value: Any) -> float | None:
        if value is None or _text(value) == "":
            return None
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise CorpusError(f"{at}: duration {value!r} is not a positive number of seconds")
        if seconds > MAX_SECONDS:
            raise CorpusError(
                f"{at}: duration {value!r} is more than {MAX_SECONDS:.0f} s; expected the utterance's length in seconds"
            )
        return seconds


def _text(value: Any) -> str:
    """A cell as text: numbers (JSON) as written, None as empty, whitespace trimmed."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()
