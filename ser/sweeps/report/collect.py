"""A sweep folder's results.json files gathered into rows x corpora, each row tested
against the baseline (what makes a row: ser.sweeps.report)."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ser.sweeps.report.statistics import CORRECTION, PairedTest, benjamini_hochberg, paired_tests
from ser.tracking import results

ALL_CORPORA = "all"
METRICS = results.METRICS  # ("test/uar", "test/war")

# The paper's MS-SENet on MFCCs: what every variant is compared with unless told otherwise
# (`variant` is the network's label in the config, ser/conf/model/mssenet.yaml).
PAPER_BASELINE = "variant=mssenet-paper-se_on-spatial_dropout-tab10 features.kind=mfcc"

# Settings that never make a row: replicates (seeds), the column (dataset), and where or
# how a run happened. Keys are override keys without +/++/~ prefixes.
AGGREGATED_KEYS = frozenset({"seed", "cv.seed", "dataset", "sweep", "progress", "experiment_name"})
AGGREGATED_PREFIXES = (
    "paths", "hydra", "logger", "callbacks", "trainer.accelerator", "trainer.devices",
    "dataset.root", "dataset.cache_dir", "dataset.num_workers", "dataset.load_threads",
    "dataset.feature_device",
)


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
        str(lookup(config, key)) for key in ("variant", "features.kind")
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


def fewest_telling_apart(runs: Sequence[Run], keys: list[str]) -> list[str]:
    """The first smallest subset of ``keys`` whose values tell apart the same runs that all
    of ``keys`` tell apart: a sweep of named points (hydra/sweeper=points, sweep=ablation)
    sets the name and the point's own settings, and the name alone is the row."""
    def rows(subset: Sequence[str]) -> int:
        return len({tuple(setting(run, key) for key in subset) for run in runs})

    wanted = rows(keys)
    for size in range(1, len(keys)):
        for subset in itertools.combinations(keys, size):
            if rows(subset) == wanted:
                return list(subset)
    return keys


def row_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's row: the fewest of the settings that vary across runs that tell the runs
    apart, or its variant name when none varies."""
    keys: list[str] = []
    for run in runs:
        for override in run.overrides:
            key = override_key(override)
            if key and not is_aggregated(key) and key not in keys:
                keys.append(key)
    varying = [key for key in keys if len({setting(run, key) for run in runs}) > 1]
    if not varying:
        return [run.variant for run in runs]
    chosen = fewest_telling_apart(runs, varying)
    return [" ".join(f"{key}={setting(run, key)}" for key in chosen) for run in runs]


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
    # (row label, corpus, metric) -> the Wilcoxon p-value corrected for multiple
    # comparisons over every row x corpus x metric (see `correct`); `correction` says how.
    adjusted: dict[tuple[str, str, str], float] = field(default_factory=dict)
    correction: str = ""


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
    correct(report)


def correct(report: Report) -> None:
    """Correct the Wilcoxon p-values for multiple comparisons (Benjamini-Hochberg).

    The family is every test on one corpus: each row against the baseline, on each
    corpus, for UAR and for WAR. The pooled column (all corpora) is left out: it
    re-tests the same folds, so it is a summary, not a further comparison.
    """
    family = [key for key in report.tests if key[1] != ALL_CORPORA]
    adjusted = benjamini_hochberg([report.tests[key].wilcoxon_p for key in family])
    report.adjusted = {key: float(p) for key, p in zip(family, adjusted, strict=True) if not np.isnan(p)}
    report.correction = (
        f"Wilcoxon p-values corrected by {CORRECTION} (false discovery rate) over the "
        f"{len(report.adjusted)} tests of every row x corpus x metric (UAR, WAR) against the baseline"
    )
