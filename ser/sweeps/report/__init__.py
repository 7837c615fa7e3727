"""`sweep.py report DIR`: every results.json under DIR in one table, with paired tests.

Rows are variants, columns corpora; a cell is the test UAR and WAR mean +- sample std over
every fold of every run of that variant on that corpus. Each variant is compared with a
baseline row by paired tests over identical folds (corpus, split seed, fold index; the
mean over training seeds), kept only where both rows tested the same utterances. A row is
the fewest varying Hydra settings that tell the runs apart, leaving out replicates (seeds),
columns (the dataset) and where a run happened (paths, logger, launcher); a named point of
`sweep=ablation` is its own row (``ablation=no_se``). `collect` gathers and tests
(`statistics`), `render` writes, `write_report` does both.
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
