"""What a configured dataset holds: counts expected versus found, durations, feature shape.

`python -m ser.data dataset=emodb dataset.root=PATH` prints this summary; it parses the
corpus and reads only the audio headers (no decoding, no feature extraction), so it is a
quick check that a download is complete and where it is pointed.
"""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile
from hydra.utils import instantiate
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ser.data.audio import check_header
from ser.settings.data import DatasetSettings


@dataclass
class CountRow:
    """Found versus expected utterances of one class or speaker (expected None: not fixed)."""

    name: str
    found: int
    expected: int | None

    @property
    def ok(self) -> bool:
        return self.expected is None or self.found == self.expected


@dataclass
class DatasetSummary:
    corpus: str
    title: str
    source: str
    num_utterances: int
    expected_total: int | None
    classes: list[CountRow]
    speakers: list[CountRow]
    excluded: dict[str, int]
    feature_shape: tuple[int, int]
    signal_length: int
    sample_rate: int
    split_seed: int
    # Seconds (min, mean, max, total) from the audio headers; None without audio files.
    durations: dict[str, float] | None = None
    unreadable: list[dict[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(row.ok for row in self.classes) and all(row.ok for row in self.speakers)


def datamodule_from_settings(settings: DatasetSettings) -> Any:
    """The configured DataModule, built as the training driver builds it (nothing loaded yet)."""
    return instantiate(dataclasses.asdict(settings), _recursive_=False, _convert_="all")  # type: ignore[call-overload]


def durations(paths: list[str]) -> tuple[dict[str, float] | None, list[dict[str, str]]]:
    """Duration statistics in seconds from the file headers, and the files that failed."""
    seconds, failed = [], []
    for path in paths:
        try:
            info = soundfile.info(path)
            check_header(Path(path), info.samplerate, info.channels, info.frames)
        except Exception as error:  # a summary reports every bad file instead of stopping
            failed.append({"path": path, "reason": str(error).strip() or type(error).__name__})
            continue
        seconds.append(info.frames / info.samplerate if info.samplerate else 0.0)
    if not seconds:
        return None, failed
    return {
        "min": min(seconds), "mean": statistics.fmean(seconds), "max": max(seconds),
        "total": sum(seconds),
    }, failed


def summarise(datamodule: Any) -> DatasetSummary:
    """Parse the dataset (headers only for audio) and count what is there."""
    corpus = datamodule.corpus
    with warnings.catch_warnings():
        # The partial-copy warning says what the tables below show in full.
        warnings.filterwarnings("ignore", message=".*looks partial.*")
        manifest = datamodule.build_manifest()
    found = manifest.class_counts()
    expected = corpus.expected_counts
    classes = [
        CountRow(name, found.get(name, 0), expected.get(name) if expected else None)
        for name in corpus.class_names
    ]
    speaker_found: dict[str, int] = {}
    for speaker in manifest.speakers:
        speaker_found[speaker] = speaker_found.get(speaker, 0) + 1
    speaker_expected = corpus.expected_speaker_counts or {}
    # A complete copy's speakers are listed even when none of their files were found.
    known = list(speaker_expected) or (
        list(getattr(corpus, "speakers", ())) if corpus.expected_counts else []
    )
    names = known + sorted(set(speaker_found) - set(known))
    speakers = [CountRow(n, speaker_found.get(n, 0), speaker_expected.get(n)) for n in names]
    stats, unreadable = (None, [])
    if getattr(datamodule, "has_audio", True):
        stats, unreadable = durations([u.path for u in manifest.utterances])
    settings = datamodule.feature_settings
    return DatasetSummary(
        corpus=corpus.name,
        title=corpus.display_name,
        source=str(manifest.root),
        num_utterances=len(manifest),
        expected_total=sum(expected.values()) if expected else None,
        classes=classes,
        speakers=speakers,
        excluded=dict(corpus.excluded) if hasattr(corpus, "excluded") else {},
        feature_shape=datamodule.feature_shape,
        signal_length=settings.signal_length,
        sample_rate=settings.sample_rate,
        split_seed=corpus.split_seed,
        durations=stats,
        unreadable=unreadable,
    )


def _count_table(title: str, column: str, rows: list[CountRow]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(column)
    table.add_column("found", justify="right")
    table.add_column("expected", justify="right")
    for row in rows:
        style = None if row.ok else "bold red"
        expected = "-" if row.expected is None else str(row.expected)
        table.add_row(escape(row.name), str(row.found), expected, style=style)
    return table


def print_summary(summary: DatasetSummary, console: Console | None = None) -> None:
    """Print the summary as rich tables."""
    console = console or Console()
    total = (
        f"{summary.num_utterances} of {summary.expected_total} expected"
        if summary.expected_total is not None else f"{summary.num_utterances}"
    )
    state = "complete" if summary.complete else "differs from a complete copy (rows in red)"
    if summary.expected_total is None:
        state = "no fixed size"
    console.print(f"[bold]{escape(summary.title)}[/bold] at {escape(summary.source)}: {total} utterances, {state}")
    console.print(_count_table("Classes (found vs expected)", "class", summary.classes))
    console.print(_count_table("Speakers (found vs expected)", "speaker", summary.speakers))
    if summary.excluded:
        left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(summary.excluded.items()))
        console.print(f"Left out or merged on purpose: {escape(left_out)}")
    if summary.durations is not None:
        d = summary.durations
        console.print(
            f"Duration (s): min {d['min']:.2f}, mean {d['mean']:.2f}, max {d['max']:.2f}, "
            f"total {d['total'] / 3600:.2f} h"
        )
    else:
        console.print("Duration: no audio files (precomputed features)")
    if summary.unreadable:
        console.print(f"[bold red]{len(summary.unreadable)} unreadable file(s):[/bold red]")
        for item in summary.unreadable[:20]:
            console.print(f"  {escape(item['path'])}: {escape(item['reason'])}")
        if len(summary.unreadable) > 20:
            console.print(f"  ... and {len(summary.unreadable) - 20} more")
    frames, features = summary.feature_shape
    console.print(
        f"Features per utterance: {frames} frames x {features} features "
        f"(signal length {summary.signal_length} samples = "
        f"{summary.signal_length / summary.sample_rate:.2f} s at {summary.sample_rate} Hz); "
        f"split seed {summary.split_seed}"
    )


def summarise_dataset(settings: DatasetSettings) -> DatasetSummary:
    """Build the configured dataset (`ser-data`: ser.commands.summarise), print its
    summary and return it."""
    summary = summarise(datamodule_from_settings(settings))
    print_summary(summary)
    return summary

