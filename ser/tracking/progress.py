"""What a run shows while it works (`progress=true`, the default; `progress=false` for logs
and CI silences it): a bar over the files of a feature extraction, and a line before each
fold saying which fold of how many is next and about how long the rest will take.

Lightning draws the epoch bars inside each fold (`enable_progress_bar`). The extraction
bar is rich's (a dependency already, for the results table): on a terminal it redraws in
place; into a file or pipe it prints its final state once, so logs get one line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second (rich's speed columns count bytes)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} {self.unit}/s", style="progress.data.speed")


class NoBar:
    """What `bar` yields with progress off: advancing it does nothing."""

    def advance(self, count: int = 1) -> None:
        pass


class Bar:
    """One task of a rich Progress, advanced by the caller."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task

    def advance(self, count: int = 1) -> None:
        self.progress.advance(self.task, count)


@contextmanager
def bar(description: str, total: int, unit: str = "files", enabled: bool = True) -> Iterator[Bar | NoBar]:
    """A progress bar over `total` items: done/total, rate, elapsed and time left."""
    if not enabled:
        yield NoBar()
        return
    columns = (
        TextColumn("[progress.description]{task.description}"), BarColumn(bar_width=30),
        MofNCompleteColumn(), TextColumn(unit), RateColumn(unit),
        TimeRemainingColumn(), TextColumn("left"),
    )
    console = Console()
    if not console.is_terminal:  # a log file: one line, not rich's 80 columns wrapped
        console = Console(width=120)
    with Progress(*columns, console=console) as progress:
        yield Bar(progress, progress.add_task(description, total=total))


def duration(seconds: float) -> str:
    """`1h 02m`, `3m 05s`, `42s`."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


class RunProgress:
    """The run-level line over the units of an experiment: the protocol's 'fold k/K' and
    the time left, estimated from the units trained so far in this process (units
    finished before a restart are skipped: they count as done and take no time)."""

    def __init__(self, to_train: int) -> None:
        self.to_train = to_train
        self.trained = 0
        self.started = time.monotonic()

    def line(self, announce: str) -> str:
        """`announce` (the protocol's 'fold k/K'), with the time so far and the time left."""
        if not self.trained:
            return f"{announce} ({self.to_train} to train)"
        elapsed = time.monotonic() - self.started
        left = elapsed / self.trained * (self.to_train - self.trained)
        return f"{announce} ({self.trained}/{self.to_train} trained in {duration(elapsed)}, about {duration(left)} left)"

    def done(self) -> None:
        """One more unit trained."""
        self.trained += 1
