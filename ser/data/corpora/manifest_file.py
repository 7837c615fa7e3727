"""A manifest of the user's corpus: a CSV or JSONL file with one row per utterance.

Columns: `path` and `label` (required); `speaker`, `session`, `split` (train, val or
test) and `duration` (seconds) optional; any other column is ignored. Paths are
relative to the manifest's folder (absolute ones are kept). Rows keep the file's order,
which the folds of `cv=kfold` depend on. Every error names the file and the line.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ser.data.audio import MAX_SECONDS, special_file
from ser.data.corpora.base import CorpusError
from ser.data.corpora.labelled import LabelledCorpus
from ser.data.manifest import Utterance

REQUIRED = ("path", "label")
OPTIONAL = ("speaker", "session", "split", "duration")
SPLITS = ("train", "val", "test")
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
# A row is a path and a few short fields: a longer line is not a manifest row (and csv's own
# field limit is 128 KiB).
MAX_LINE = 128 * 1024


class ManifestCorpus(LabelledCorpus):
    """The rows of a manifest file (`dataset=manifest dataset.path=FILE`)."""

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = resolved(Path(path).expanduser(), "dataset.path")

    def layout_hint(self) -> str:
        return "a CSV or JSONL manifest with columns path, label [, speaker, session, split, duration]"

    def source(self, root: Path) -> str:
        return str(self.path)

    def rows(self, root: Path) -> Iterator[Utterance]:
        if not self.path.exists():
            raise CorpusError(f"manifest not found: {self.path} (set dataset.path=FILE.csv or FILE.jsonl)")
        check_regular(self.path, "dataset.path", "a CSV or JSONL manifest")
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
        reader = csv.DictReader(text for _, text in self._lines())
        try:
            self._check_columns(reader.fieldnames or [], "header")
            start = reader.line_num + 1
            for record in reader:
                values = [value for value in record.values() if isinstance(value, str)]
                # A quoted field that runs over lines (a quote left open) would swallow the
                # rows that follow it: one row per line, always.
                if any("\n" in value for value in values):
                    raise CorpusError(
                        f"{self.path} line {start}: a quoted field runs on to line {reader.line_num} "
                        f"(a quote left open?); expected one row per line"
                    )
                start = reader.line_num + 1
                if any(value.strip() for value in values):  # else a blank line
                    yield reader.line_num, record
        except csv.Error as error:
            raise CorpusError(f"{self.path} line {reader.line_num}: not a CSV row ({error})") from None

    def _jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for line, text in self._lines():
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{self.path} line {line}: not valid JSON ({error.msg})") from None
            except RecursionError:
                raise CorpusError(f"{self.path} line {line}: JSON nested too deeply; expected one flat object") from None
            if not isinstance(record, dict):
                raise CorpusError(f"{self.path} line {line}: expected a JSON object per line, got {type(record).__name__}")
            self._check_columns(list(record), f"line {line}")
            yield line, record

    def _lines(self) -> Iterator[tuple[int, str]]:
        """The manifest's lines as text, numbered from 1: UTF-8 (a BOM allowed), none longer
        than MAX_LINE bytes; anything else is refused naming the line, never half read."""
        try:
            handle = self.path.open("rb")
        except OSError as error:
            raise CorpusError(f"{self.path}: cannot be read ({error.strerror or error})") from error
        with handle:
            for number in itertools.count(1):
                raw = handle.readline(MAX_LINE + 1)
                if not raw:
                    return
                yield number, self._decoded(number, raw)

    def _decoded(self, number: int, raw: bytes) -> str:
        at = f"{self.path} line {number}"
        if len(raw) > MAX_LINE:
            raise CorpusError(f"{at}: longer than {MAX_LINE} bytes; expected one short row per utterance")
        if number == 1 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise CorpusError(f"{at}: UTF-16 text; expected UTF-8 (save the manifest as UTF-8)")
        if b"\x00" in raw:
            raise CorpusError(f"{at}: holds NUL bytes (UTF-16 text, or not text); expected UTF-8")
        try:
            return raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise CorpusError(
                f"{at}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}, as Latin-1 "
                f"or Windows text has); save the manifest as UTF-8"
            ) from None

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
        audio = resolved(audio if audio.is_absolute() else self.path.parent / audio, at)
        if not audio.exists():
            raise CorpusError(f"{at}: audio file not found: {audio}")
        check_regular(audio, at, "an audio file")
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


def shortened(text: str, keep: int = 240) -> str:
    """`text`, or its start and end when it is too long to be read in a message."""
    return text if len(text) <= keep else f"{text[: keep // 2]}...{text[-keep // 2:]} ({len(text)} characters)"


def resolved(path: Path, at: str) -> Path:
    """`path` made absolute, symlinks followed; a loop or an unusable name names `at`."""
    try:
        path = path.resolve()
        path.exists()  # raises for a name the system refuses (too long)
    except RuntimeError:  # Python 3.11's resolve() on a symlink loop
        raise CorpusError(f"{at}: {shortened(str(path))} is a symlink loop") from None
    except OSError as error:
        raise CorpusError(f"{at}: {shortened(str(path))} cannot be used ({error.strerror or error})") from None
    return path


def check_regular(path: Path, at: str, expected: str) -> None:
    """Only regular files are opened: a FIFO or a device would block the read, or never end."""
    kind = "a directory" if path.is_dir() else special_file(path)
    if kind is not None:
        raise CorpusError(f"{at}: {path} is {kind}; expected {expected}")


def _text(value: Any) -> str:
    """A cell as text: numbers (JSON) as written, None as empty, whitespace trimmed."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()
