"""A sweep report written out: report.md, report.csv, report.png and the W&B `report` run."""

from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ser.sweeps.report.collect import ALL_CORPORA, METRICS, Cell, Report
from ser.sweeps.report.statistics import SIGNIFICANCE_LEVEL

REPORT_MARKDOWN = "report.md"
REPORT_CSV = "report.csv"
REPORT_CHART = "report.png"


def percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def signed(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{100 * value + 0.0:+.2f}".replace("-0.00", "+0.00")


def p_value(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def significant(report: Report, key: tuple[str, str, str]) -> bool:
    """Whether the corrected p-value of a test is below the significance level."""
    return report.adjusted.get(key, float("nan")) < SIGNIFICANCE_LEVEL


def correction_note(report: Report) -> str:
    return f"{report.correction}; * marks corrected p < {SIGNIFICANCE_LEVEL:g}."


def mean_std(cell: Cell, metric: str) -> str:
    mean, std = cell.summary(metric)
    return percent(mean) if math.isnan(std) else f"{percent(mean)} ± {percent(std)}"


def markdown(report: Report) -> str:
    """The report as Markdown: the score table, the paired tests per metric, notes."""
    lines = [
        "# Sweep report", "",
        f"{report.num_runs} run(s) under `{report.directory}`. Baseline: "
        + (f"**{report.baseline}** ({report.baseline_spec})." if report.baseline else "none."),
        "",
        "## Test UAR / WAR (%), mean ± std over folds and seeds", "",
        "| row | variant | " + " | ".join(report.corpora) + " |",
        "|---|---|" + "---|" * len(report.corpora),
    ]
    for row in report.rows:
        cells = []
        for corpus in report.corpora:
            cell = row.cells.get(corpus)
            if cell is None:
                cells.append("")
                continue
            folds, runs = len(cell.values("test/uar")), len(cell.runs)
            cells.append(
                f"{mean_std(cell, 'test/uar')} / {mean_std(cell, 'test/war')} "
                f"({folds} folds, {runs} run{'s' if runs != 1 else ''})"
            )
        name = f"{row.label} (baseline)" if row.label == report.baseline else row.label
        lines.append(f"| {name} | {', '.join(row.variants)} | " + " | ".join(cells) + " |")
    if report.tests:
        columns = report.corpora + ([ALL_CORPORA] if len(report.corpora) > 1 else [])
        for metric in METRICS:
            name = metric.split("/")[1].upper()
            lines += [
                "", f"## Paired tests against the baseline: {name}", "",
                "Mean difference (row − baseline, percentage points), two-sided Wilcoxon "
                "signed-rank and paired t-test p-values, n paired folds; W p(BH): the "
                f"Wilcoxon p-value corrected for multiple comparisons. {correction_note(report)}", "",
                "| row | " + " | ".join(columns) + " |",
                "|---|" + "---|" * len(columns),
            ]
            for row in report.rows:
                if row.label == report.baseline:
                    continue
                cells = []
                for corpus in columns:
                    key = (row.label, corpus, metric)
                    test = report.tests.get(key)
                    corrected = (
                        f" W p(BH)={p_value(report.adjusted[key])}{'*' if significant(report, key) else ''};"
                        if key in report.adjusted else ""
                    )
                    cells.append("" if test is None else (
                        f"{signed(test.mean_difference)}; W p={p_value(test.wilcoxon_p)};{corrected} "
                        f"t p={p_value(test.ttest_p)}; n={test.n}"
                    ))
                lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    test_notes = sorted({
        f"{label} on {corpus} ({metric}): {test.note}"
        for (label, corpus, metric), test in report.tests.items() if test.note
    })
    if report.notes or test_notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes + test_notes]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "row", "variant", "corpus", "baseline", "runs", "folds",
    "test/uar_mean", "test/uar_std", "test/war_mean", "test/war_std", "pairs",
    "test/uar_difference", "test/uar_wilcoxon_p", "test/uar_wilcoxon_p_bh", "test/uar_ttest_p",
    "test/war_difference", "test/war_wilcoxon_p", "test/war_wilcoxon_p_bh", "test/war_ttest_p", "note",
)


def table_rows(report: Report) -> list[dict[str, Any]]:
    """One record per (row, corpus), plus (row, all) when there are several corpora."""
    records = []
    columns = report.corpora + ([ALL_CORPORA] if len(report.corpora) > 1 else [])
    for row in report.rows:
        for corpus in columns:
            cell = row.all_runs() if corpus == ALL_CORPORA else row.cells.get(corpus)
            if cell is None:
                continue
            record: dict[str, Any] = {
                "row": row.label, "variant": ", ".join(row.variants), "corpus": corpus,
                "baseline": row.label == report.baseline, "runs": len(cell.runs),
                "folds": len(cell.values("test/uar")),
            }
            for metric in METRICS:
                record[f"{metric}_mean"], record[f"{metric}_std"] = cell.summary(metric)
            notes = []
            for metric in METRICS:
                test = report.tests.get((row.label, corpus, metric))
                if test is None:
                    continue
                record["pairs"] = test.n
                record[f"{metric}_difference"] = test.mean_difference
                record[f"{metric}_wilcoxon_p"] = test.wilcoxon_p
                record[f"{metric}_ttest_p"] = test.ttest_p
                if (row.label, corpus, metric) in report.adjusted:
                    record[f"{metric}_wilcoxon_p_bh"] = report.adjusted[(row.label, corpus, metric)]
                if test.note:
                    notes.append(f"{metric}: {test.note}")
            record["note"] = "; ".join(notes)
            records.append(record)
    return records


def write_csv(report: Report, path: Path) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in table_rows(report):
            writer.writerow({key: record.get(key, "") for key in CSV_COLUMNS})


def write_chart(report: Report, path: Path) -> None:
    """Grouped bars (corpora x rows) of mean UAR and WAR with std error bars."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    corpora = report.corpora or ["-"]
    width = 0.8 / max(1, len(report.rows))
    figure = Figure(figsize=(max(6.0, 1.2 + len(corpora) * len(report.rows) * 0.45), 7.5))
    axes = figure.subplots(2, 1, sharex=True)
    positions = np.arange(len(corpora))
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, row in enumerate(report.rows):
            means, stds = [], []
            for corpus in corpora:
                cell = row.cells.get(corpus)
                mean, std = cell.summary(metric) if cell else (float("nan"), float("nan"))
                means.append(100 * mean)
                stds.append(0.0 if math.isnan(std) else 100 * std)
            label = f"{row.label} (baseline)" if row.label == report.baseline else row.label
            x = positions + (i - (len(report.rows) - 1) / 2) * width
            ax.bar(x, means, width, yerr=stds, capsize=3, label=label)
            for position, mean, std, corpus in zip(x, means, stds, corpora, strict=True):
                if significant(report, (row.label, corpus, metric)):
                    ax.annotate("*", (position, mean + std), ha="center", va="bottom", fontsize=14,
                                fontweight="bold", xytext=(0, 1), textcoords="offset points")
        ax.set_ylabel(f"{metric.split('/')[1].upper()} % (mean ± std)")
        ax.set_ylim(0, 110)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(positions, corpora)
    title = f"Sweep report: {report.directory.name}"
    if report.adjusted:  # the correction is part of what a star means: said on the figure
        width_chars = int(12 * figure.get_figwidth())
        title += "\n" + "\n".join(textwrap.wrap(correction_note(report), width_chars))
    axes[0].set_title(title, fontsize=9)
    axes[-1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small",
                    ncol=1 if len(report.rows) > 4 else len(report.rows))
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")


def log_to_wandb(report: Report, project: str, mode: str, chart: Path | None) -> None:
    """One W&B run of job type ``report`` holding the table (and the chart)."""
    import wandb

    run = wandb.init(
        project=project, mode=mode, dir=str(report.directory), job_type="report",
        name=f"report-{report.directory.name}", group=f"report-{report.directory.name}",
        config={"directory": str(report.directory), "baseline": report.baseline},
        reinit="finish_previous",
    )
    try:
        records = table_rows(report)
        table = wandb.Table(columns=list(CSV_COLUMNS),
                            data=[[record.get(key) for key in CSV_COLUMNS] for record in records])
        payload: dict[str, Any] = {"report": table}
        if chart is not None and chart.exists():
            payload["report_chart"] = wandb.Image(str(chart))
        run.log(payload)
    finally:
        run.finish()
