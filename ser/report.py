"""`sweep.py report DIR`: every results.json under DIR in one table, with paired tests.

Rows are variants, columns corpora; a cell is the test UAR and WAR mean +- sample std
over every fold of every run of that variant on that corpus (folds and seeds). Each
variant is compared with a baseline row by paired tests over identical folds: a fold is
identified by (corpus, split seed, fold index), its score is the mean over the training
seeds run on it, and a pair is kept only when both rows tested the same utterances.

What makes a row: the Hydra settings that vary across the collected runs (group
choices such as ``model/se`` and values such as ``model.net.num_blocks``, read from
each results.json), except those that are replicates or columns (seeds, the dataset)
or say where and how a run happened (paths, logger, launcher). When nothing varies,
the row is the run's variant name (``<model variant>-<features>``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import shlex
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ser.tracking import results

log = logging.getLogger(__name__)

REPORT_MARKDOWN = "report.md"
REPORT_CSV = "report.csv"
REPORT_CHART = "report.png"
ALL_CORPORA = "all"
METRICS = results.METRICS  # ("test/uar", "test/war")
# Differences smaller than this are ties (float32 rounding of the same fraction).
TIE_TOLERANCE = 1e-6

# The paper's MS-SENet on MFCCs: what every variant is compared with unless told otherwise.
PAPER_BASELINE = (
    "model.name=mssenet model.kernels.name=paper model.se.enabled=true "
    "model.regularizer.kind=spatial_dropout model.net.num_blocks=10 features.kind=mfcc"
)

# Settings that never make a row: replicates (seeds), the column (dataset), and where or
# how a run happened. Keys are override keys without +/++/~ prefixes.
AGGREGATED_KEYS = frozenset({"seed", "cv.seed", "dataset", "sweep", "progress", "experiment_name"})
AGGREGATED_PREFIXES = (
    "paths", "hydra", "logger", "callbacks", "trainer.accelerator", "trainer.devices",
    "dataset.root", "dataset.cache_dir", "dataset.num_workers", "dataset.load_threads",
    "dataset.feature_device",
)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank and paired t-test of variant minus baseline over n pairs."""

    n: int
    mean_difference: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    t_statistic: float
    ttest_p: float
    note: str = ""


def paired_tests(variant: Sequence[float], baseline: Sequence[float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank (scipy's exact test for small n) and paired t-test.

    Degenerate inputs give NaN with a note instead of an error or a misleading number:
    fewer than two pairs, all differences zero (no ranks; t undefined), or constant
    non-zero differences (t infinite). Zero differences are dropped by Wilcoxon.
    """
    a = np.asarray(variant, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got {a.shape} and {b.shape}")
    differences = a - b
    # Scores are float32 fractions: differences below their rounding error are ties.
    differences[np.abs(differences) < TIE_TOLERANCE] = 0.0
    n = len(differences)
    nan = float("nan")
    mean = float(differences.mean()) if n else nan
    if n < 2:
        return PairedTest(n, mean, nan, nan, nan, nan, f"too few pairs (n={n}) for a test")
    if np.all(differences == 0):
        return PairedTest(n, mean, nan, nan, nan, nan, "all differences are zero: no test")
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w = stats.wilcoxon(differences, alternative="two-sided")
        zeros = int(np.sum(differences == 0))
        if zeros:
            notes.append(f"Wilcoxon dropped {zeros} zero difference(s)")
        nonzero = n - zeros
        if nonzero < 6:
            notes.append(
                f"with {nonzero} non-zero pair(s) Wilcoxon p cannot go below {2 / 2**nonzero:.4g}"
            )
        if np.ptp(differences) < TIE_TOLERANCE:
            t_statistic, t_p = nan, nan
            notes.append("constant differences: t-test undefined")
        else:
            t = stats.ttest_rel(a, b)
            t_statistic, t_p = float(t.statistic), float(t.pvalue)
    return PairedTest(
        n, mean, float(w.statistic), float(w.pvalue), t_statistic, t_p, "; ".join(notes),
    )


# --------------------------------------------------------------------------- gathering


@dataclass
class Run:
    """One finished cross-validation run (one results.json)."""

    path: Path
    corpus: str
    split_seed: int
    training_seed: int
    variant: str
    choices: dict[str, Any]
    overrides: list[str]
    config: dict[str, Any]
    folds: list[dict[str, Any]]


def natural_key(path: Path) -> list[Any]:
    """Sort 2 before 10 in sweep subdirectories."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def load_run(path: Path) -> Run | str:
    """The run in ``path``, or why it is left out."""
    try:
        record = results.read_json(path)
    except (OSError, json.JSONDecodeError) as error:
        return f"{path}: unreadable ({error})"
    if not isinstance(record, dict) or "folds" not in record or "seeds" not in record:
        return f"{path}: not a cross-validation results file"
    if record.get("status") != "complete":
        return f"{path}: status {record.get('status')!r}, not complete"
    config = record.get("config") or {}
    hydra = record.get("hydra") or {}
    variant = record.get("variant") or "-".join(
        str(lookup(config, key)) for key in ("model.variant", "features.kind")
    )
    try:
        run = Run(
            path=path, corpus=str(record["corpus"]),
            split_seed=int(record["seeds"]["split"]), training_seed=int(record["seeds"]["training"]),
            variant=str(variant), choices=dict(hydra.get("choices") or {}),
            overrides=[str(o) for o in hydra.get("overrides") or []], config=config,
            folds=list(record["folds"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        return f"{path}: not a cross-validation results file ({type(error).__name__}: {error})"
    if not all(
        isinstance(fold, dict) and all(isinstance(fold.get(key), int | float) for key in ("fold", *METRICS))
        for fold in run.folds
    ):
        return f"{path}: not a cross-validation results file (a fold lacks fold, test/uar or test/war)"
    return run


def gather_runs(directory: Path) -> tuple[list[Run], list[str]]:
    """Every complete results.json under ``directory``, and notes on what was left out."""
    runs, notes = [], []
    for path in sorted(Path(directory).rglob(results.RESULTS_FILE), key=natural_key):
        loaded = load_run(path)
        if isinstance(loaded, str):
            notes.append(f"skipped {loaded}")
        else:
            runs.append(loaded)
    return runs, notes


_MISSING = object()


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def format_value(value: Any) -> str:
    if value is _MISSING:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def override_key(override: str) -> str:
    key = override.split("=", 1)[0].lstrip("~+")
    return key.split("@", 1)[0]


def is_aggregated(key: str) -> bool:
    return key in AGGREGATED_KEYS or any(
        key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "/")
        for prefix in AGGREGATED_PREFIXES
    )


def setting(run: Run, key: str) -> str:
    """A run's value of a setting: a group choice (``model/se``) or a config value."""
    if key in run.choices:
        return format_value(run.choices[key])
    if "/" in key:
        return "-"
    return format_value(lookup(run.config, key))


def row_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's row: the settings that vary across runs, or its variant name."""
    keys: list[str] = []
    for run in runs:
        for override in run.overrides:
            key = override_key(override)
            if key and not is_aggregated(key) and key not in keys:
                keys.append(key)
    varying = [key for key in keys if len({setting(run, key) for run in runs}) > 1]
    if not varying:
        return [run.variant for run in runs]
    return [" ".join(f"{key}={setting(run, key)}" for key in varying) for run in runs]


# --------------------------------------------------------------------------- the table


@dataclass
class Cell:
    """One row on one corpus: fold scores of every run, and fold-unit means for pairing."""

    runs: list[Run] = field(default_factory=list)

    def values(self, metric: str) -> np.ndarray:
        return np.array([f[metric] for run in self.runs for f in run.folds], dtype=np.float64)

    def summary(self, metric: str) -> tuple[float, float]:
        values = self.values(metric)
        mean = float(values.mean()) if len(values) else float("nan")
        std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        return mean, std

    def units(self, metric: str) -> dict[tuple[str, int, int], tuple[float, tuple[int, ...] | None]]:
        """(corpus, split seed, fold) -> (mean over training seeds, test rows)."""
        scores: dict[tuple[str, int, int], list[float]] = {}
        rows: dict[tuple[str, int, int], tuple[int, ...] | None] = {}
        for run in self.runs:
            for fold in run.folds:
                key = (run.corpus, run.split_seed, int(fold["fold"]))
                scores.setdefault(key, []).append(float(fold[metric]))
                test_rows = fold.get("test_rows")
                rows.setdefault(key, tuple(test_rows) if test_rows is not None else None)
        return {key: (float(np.mean(v)), rows[key]) for key, v in scores.items()}


@dataclass
class Row:
    label: str
    variants: list[str] = field(default_factory=list)
    cells: dict[str, Cell] = field(default_factory=dict)

    def all_runs(self) -> Cell:
        return Cell([run for cell in self.cells.values() for run in cell.runs])


@dataclass
class Report:
    directory: Path
    rows: list[Row]
    corpora: list[str]
    baseline: str | None
    baseline_spec: str
    # (row label, corpus or ALL_CORPORA, metric) -> test against the baseline
    tests: dict[tuple[str, str, str], PairedTest]
    notes: list[str]
    num_runs: int


def normalise(value: str) -> str:
    text = value.strip().strip("'\"")
    if text.lower() in ("true", "false", "null", "none"):
        return {"none": "null"}.get(text.lower(), text.lower())
    try:
        return format(float(text), "g")
    except ValueError:
        return text


def matches(run: Run, conditions: Iterable[tuple[str, str]]) -> bool:
    return all(normalise(setting(run, key)) == normalise(value) for key, value in conditions)


def select_baseline(rows: Sequence[Row], spec: str) -> tuple[str | None, str]:
    """The baseline row: one whose label or variant is ``spec``, or whose every run has
    every ``KEY=VALUE`` of ``spec`` (group choices or dotted config keys). Returns
    (label or None, how it was chosen or why none was)."""
    for row in rows:
        if spec == row.label or [spec] == row.variants:
            return row.label, f"row {spec!r}"
    try:
        words = shlex.split(spec)
    except ValueError as error:
        return None, f"cannot parse baseline {spec!r}: {error}"
    if not words or any("=" not in word for word in words):
        return None, f"no row is {spec!r}, and it is not a list of KEY=VALUE conditions"
    conditions = [(key, value) for key, value in (word.split("=", 1) for word in words)]
    found = [
        row.label for row in rows
        if all(matches(run, conditions) for run in row.all_runs().runs)
    ]
    if len(found) == 1:
        return found[0], f"the row where {spec}"
    if not found:
        return None, f"no row has {spec}; choose one with --baseline"
    return None, f"several rows have {spec} ({'; '.join(found)}); narrow --baseline"


def build_report(directory: Path, baseline_spec: str = PAPER_BASELINE) -> Report:
    """Gather the runs under ``directory`` into rows x corpora and test each row."""
    directory = Path(directory)
    runs, notes = gather_runs(directory)
    labels = row_labels(runs)
    rows: dict[str, Row] = {}
    corpora: list[str] = []
    seen: dict[tuple[str, str, int, int], Path] = {}
    for run, label in zip(runs, labels, strict=True):
        identity = (label, run.corpus, run.split_seed, run.training_seed)
        if identity in seen:
            notes.append(f"skipped {run.path}: the same row, corpus and seeds as {seen[identity]}")
            continue
        seen[identity] = run.path
        row = rows.setdefault(label, Row(label))
        if run.variant not in row.variants:
            row.variants.append(run.variant)
        row.cells.setdefault(run.corpus, Cell()).runs.append(run)
        if run.corpus not in corpora:
            corpora.append(run.corpus)

    ordered = list(rows.values())
    baseline, how = select_baseline(ordered, baseline_spec) if ordered else (None, "no runs")
    if baseline is None:
        notes.append(f"no paired tests: {how}")
    else:
        ordered.sort(key=lambda row: row.label != baseline)  # stable: baseline first
    used = sum(len(cell.runs) for row in ordered for cell in row.cells.values())
    report = Report(directory, ordered, corpora, baseline, how, {}, notes, used)
    if baseline is not None:
        run_tests(report)
    return report


def run_tests(report: Report) -> None:
    baseline = next(row for row in report.rows if row.label == report.baseline)
    columns = report.corpora + ([ALL_CORPORA] if len(report.corpora) > 1 else [])
    for row in report.rows:
        if row is baseline:
            continue
        for corpus in columns:
            ours = row.all_runs() if corpus == ALL_CORPORA else row.cells.get(corpus)
            theirs = baseline.all_runs() if corpus == ALL_CORPORA else baseline.cells.get(corpus)
            if ours is None or theirs is None:
                continue
            for metric in METRICS:
                a, b = ours.units(metric), theirs.units(metric)
                common = sorted(set(a) & set(b))
                differing = [k for k in common if a[k][1] and b[k][1] and a[k][1] != b[k][1]]
                pairs = [k for k in common if k not in differing]
                test = paired_tests([a[k][0] for k in pairs], [b[k][0] for k in pairs])
                if differing:
                    note = f"{len(differing)} fold(s) left out: different test utterances"
                    test = PairedTest(**{**test.__dict__, "note": "; ".join(filter(None, [test.note, note]))})
                report.tests[(row.label, corpus, metric)] = test


# --------------------------------------------------------------------------- output


def percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def signed(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{100 * value + 0.0:+.2f}".replace("-0.00", "+0.00")


def p_value(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


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
                "signed-rank and paired t-test p-values, n paired folds.", "",
                "| row | " + " | ".join(columns) + " |",
                "|---|" + "---|" * len(columns),
            ]
            for row in report.rows:
                if row.label == report.baseline:
                    continue
                cells = []
                for corpus in columns:
                    test = report.tests.get((row.label, corpus, metric))
                    cells.append("" if test is None else (
                        f"{signed(test.mean_difference)}; W p={p_value(test.wilcoxon_p)}; "
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
    "test/uar_difference", "test/uar_wilcoxon_p", "test/uar_ttest_p",
    "test/war_difference", "test/war_wilcoxon_p", "test/war_ttest_p", "note",
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
            ax.bar(positions + (i - (len(report.rows) - 1) / 2) * width, means, width,
                   yerr=stds, capsize=3, label=label)
        ax.set_ylabel(f"{metric.split('/')[1].upper()} % (mean ± std)")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(positions, corpora)
    axes[0].set_title(f"Sweep report: {report.directory.name}")
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
        raise FileNotFoundError(f"no such directory: {directory}")
    report = build_report(directory, baseline)
    if not report.rows:
        raise ValueError(f"no complete results.json under {directory}")
    (directory / REPORT_MARKDOWN).write_text(markdown(report))
    write_csv(report, directory / REPORT_CSV)
    chart = directory / REPORT_CHART
    write_chart(report, chart)
    if wandb_project is not None:
        log_to_wandb(report, wandb_project, wandb_mode, chart)
    return report
