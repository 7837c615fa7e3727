"""results.json: the per-fold record of a cross-validation run, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ser.tracking.atomic import atomic_write_json  # noqa: F401  (re-exported: results.atomic_write_json)

RESULTS_FILE = "results.json"
FOLDS_DIR = "folds"
# What an experiment is (config hash, corpus, seeds, folds), written before its folds run
# so that fold-parallel jobs sharing the directory can be gathered (ser.training.gather).
HEADER_FILE = "experiment.json"
METRICS = ("test/uar", "test/war")
OPTIONAL_METRICS = ("val/uar", "val/war")


def read_json(path: Path) -> Any:
    with open(path) as stream:
        return json.load(stream)


def fold_path(output_dir: Path, fold: int) -> Path:
    return Path(output_dir) / FOLDS_DIR / f"fold_{fold:02d}.json"


def header_path(output_dir: Path) -> Path:
    """`folds/experiment.json` of an output directory."""
    return Path(output_dir) / FOLDS_DIR / HEADER_FILE


def summarise(folds: list[dict[str, Any]]) -> dict[str, float | int]:
    """Mean and sample standard deviation (ddof=1) of each metric over the folds."""
    summary: dict[str, float | int] = {"num_folds": len(folds)}
    for key in METRICS:
        values = np.array([fold[key] for fold in folds], dtype=np.float64)
        summary[f"{key}_mean"] = float(values.mean()) if len(values) else float("nan")
        summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    for key in OPTIONAL_METRICS:  # validation figures, where every fold has a split
        values = [fold[key] for fold in folds if fold.get(key) is not None]
        if folds and len(values) == len(folds):
            summary[f"{key}_mean"] = float(np.mean(values))
            summary[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    summary["num_test_utterances"] = int(sum(fold["num_test"] for fold in folds))
    return summary


def print_table(title: str, folds: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """A rich table of UAR and WAR per fold with mean +- std."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))  # names and paths, not markup
    table.add_column("fold", justify="right")
    table.add_column("test utterances", justify="right")
    table.add_column("UAR %", justify="right")
    table.add_column("WAR %", justify="right")
    for fold in folds:
        table.add_row(
            str(fold["fold"]), str(fold["num_test"]),
            f"{100 * fold['test/uar']:.2f}", f"{100 * fold['test/war']:.2f}",
        )
    table.add_section()
    table.add_row(
        "mean +- std", str(summary["num_test_utterances"]),
        f"{100 * summary['test/uar_mean']:.2f} +- {100 * summary['test/uar_std']:.2f}",
        f"{100 * summary['test/war_mean']:.2f} +- {100 * summary['test/war_std']:.2f}",
    )
    Console().print(table)
