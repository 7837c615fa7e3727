"""`sweep.py report DIR`: every results.json under DIR in one table, with paired tests.

Rows are variants, columns corpora; a cell is the test UAR and WAR mean +- sample std
over every fold of every run of that variant on that corpus (folds and seeds). Each
variant is compared with a baseline row by paired tests over identical folds: a fold is
identified by (corpus, split seed, fold index), its score is the mean over the training
seeds run on it, and a pair is kept only when both rows tested the same utterances.

What makes a row: the Hydra settings that vary across the collected runs (group
choices such as ``model/se`` and values such as ``model.net.num_blocks``, read from
each results.json), except those that are replicates or columns (seeds, the dataset)
or say where and how a run happened (paths, logger, launcher), and of those the fewest
that tell the same runs apart: a sweep of named points (``sweep=ablation``) sets each
point's name beside its own settings, and the name alone is the row
(``ablation=no_se``). When nothing varies, the row is the run's variant name
(``<variant>-<features>``).

`collect` gathers the runs into rows x corpora and tests them (`statistics`); `render`
writes the table out; `write_report` does both.
"""

from __future__ import annotations

from pathlib import Path

from ser.errors import InputError, InputNotFound
from ser.sweeps.report.collect import PAPER_BASELINE, Report, build_report
from ser.sweeps.report.render import (
    REPORT_CHART,
    REPORT_CSV,
    REPORT_MARKDOWN,
    log_to_wandb,
    markdown,
    write_chart,
    write_csv,
)

__all__ = ["PAPER_BASELINE", "REPORT_CHART", "REPORT_CSV", "REPORT_MARKDOWN", "write_report"]


def write_report(
    directory: Path,
    baseline: str = PAPER_BASELINE,
    wandb_project: str | None = "ser",
    wandb_mode: str = "offline",
) -> Report:
    """Build the report of ``directory`` and write report.md, report.csv and report.png
    into it; log the table to W&B unless ``wandb_project`` is None."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise InputNotFound(f"no such directory: {directory}")
    report = build_report(directory, baseline)
    if not report.rows:
        raise InputError(f"no complete results.json under {directory}")
    (directory / REPORT_MARKDOWN).write_text(markdown(report))
    write_csv(report, directory / REPORT_CSV)
    chart = directory / REPORT_CHART
    write_chart(report, chart)
    if wandb_project is not None:
        log_to_wandb(report, wandb_project, wandb_mode, chart)
    return report
