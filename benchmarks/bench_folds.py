"""Fold training of the default demo: stacked folds (`cv.stack=true`) against one fold after another.

    python -m benchmarks.bench folds=true [epochs=3] [device=cpu] [out=bench-folds.json]

In one run, the default demo's cross-validation (`python train.py`: the synthetic corpus,
10 folds, MS-SENet) trains for `epochs` epochs three ways, `rounds` times, in turn: one
fold after another (`cv.stack=false`), stacked in this process (`cv.stack=true
cv.workers=1`) and stacked in worker processes (`cv.workers=auto`: on a CPU one per
thread of this process, one thread each; ser.training.stacked.workers); W&B, progress
bars and figures off, `trainer.deterministic=true`. A one-fold, one-epoch run warms the
caches first (features, the fast implementation's kernels), untimed.

- training samples/s: the training rows of every fold times the epochs, over the
  training time (each fold's `fit_seconds`: summed one fold after another; the longest
  shared fit, stacked), the median over rounds; `speedup` is stacked in this process
  over sequential, `workers_speedup` stacked in workers over sequential;
- `identical`: whether each fold's test UAR, WAR, loss and confusion matrix and its
  per-epoch training figures (history/) are the same as one after another;
  `same_predictions`: whether its test predictions are (UAR, WAR, confusion matrix); and
  the largest differences of the losses (the folds' networks computed as one add in
  another order); for the workers under `workers_comparison`.

`overrides` adds train.py settings to every run (e.g. `overrides=[model=timnet]`). The
figures depend on the machine and its load: compare the ways of one run only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from ser.tracking.history import read_history
from ser.tracking.results import read_json

WAYS = {
    "sequential": ["cv.stack=false"],
    "stacked": ["cv.stack=true", "cv.workers=1"],
    "stacked_workers": ["cv.stack=true", "cv.workers=auto"],
}
# What each fold computed, compared between the two ways.
FIGURES = ("test/uar", "test/war", "test/loss", "confusion_matrix", "epochs")


def run_config(overrides: Sequence[str], output_dir: Path) -> Any:
    """The root config of `python train.py OVERRIDES`, writing into `output_dir`."""
    from ser.conf import compose

    cfg = compose(list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def quiet_train(cfg: Any) -> float:
    """train(cfg) with its printing and Lightning's messages kept off the screen; wall seconds."""
    from ser.training.engine import train

    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "ser")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return time.perf_counter() - started


def fold_run(overrides: Sequence[str], output_dir: Path) -> dict[str, Any]:
    """One cross-validation: its training rate and each fold's figures and history."""
    wall = quiet_train(run_config(overrides, output_dir))
    record = read_json(output_dir / "results.json")
    folds = record["folds"]
    fits = [fold["fit_seconds"] for fold in folds]
    # Stacked folds share one fit, which each fold's record reports.
    fit_seconds = max(fits) if record.get("stacked") else sum(fits)
    samples = sum(fold["num_train"] * fold["epochs"] for fold in folds)
    return {
        "stacked": bool(record.get("stacked")),
        "wall_seconds": round(wall, 2),
        "fit_seconds": round(fit_seconds, 2),
        "samples": samples,
        "train_samples_per_s": samples / fit_seconds,
        "folds": [
            {key: fold[key] for key in ("fold", *FIGURES)}
            | {"history": read_history(output_dir, fold["fold"])["epochs"]}
            for fold in folds
        ],
    }


def compare(first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Whether two runs' folds have identical figures, and the largest loss differences."""
    pairs = list(zip(first["folds"], other["folds"], strict=True))
    identical = all(
        all(a[key] == b[key] for key in FIGURES) and a["history"] == b["history"] for a, b in pairs
    )
    train_losses = [
        abs(x["train/loss"] - y["train/loss"]) for a, b in pairs
        for x, y in zip(a["history"], b["history"], strict=True)
    ]
    same_predictions = all(
        all(a[key] == b[key] for key in ("test/uar", "test/war", "confusion_matrix", "epochs")) for a, b in pairs
    )
    return {
        "identical": identical,
        "same_predictions": same_predictions,
        "max_abs_test_loss_difference": max(abs(a["test/loss"] - b["test/loss"]) for a, b in pairs),
        "max_abs_train_loss_difference": max(train_losses, default=0.0),
        "max_abs_uar_difference": max(abs(a["test/uar"] - b["test/uar"]) for a, b in pairs),
    }


def fold_benchmark(args: Any) -> dict[str, Any]:
    """Time the default demo's folds both ways (see the module doc)."""
    from benchmarks.bench_report import load_average, processor_name

    if args.threads:
        torch.set_num_threads(args.threads)
    common = [
        "logger=none", "progress=false", "trainer.deterministic=true", f"trainer.max_epochs={args.epochs}",
        *(["trainer.accelerator=gpu"] if args.device.startswith("cuda") else ["trainer.accelerator=cpu"]),
        *args.overrides,
    ]
    results: dict[str, Any] = {
        "config": {"epochs": args.epochs, "rounds": args.rounds, "device": args.device, "overrides": common},
        "environment": {
            "torch": torch.__version__, "processor": processor_name(), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
            "load_average_at_start": load_average(),
        },
    }
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="ser-bench-folds-") as work:
        quiet_train(run_config([*common, "trainer.max_epochs=1", "cv.only_folds=0"], Path(work) / "warm-up"))
        for round_number in range(args.rounds):
            shift = round_number % len(WAYS)  # each way first in turn, under the same load
            order = list(WAYS)[shift:] + list(WAYS)[:shift]
            for way in order:
                output = Path(work) / f"{way}-{round_number}"
                runs[way].append(fold_run([*common, *WAYS[way]], output))
    for way, attempts in runs.items():
        rate = statistics.median(run["train_samples_per_s"] for run in attempts)
        results[way] = {**attempts[0], "train_samples_per_s": rate, "rounds": [
            {key: run[key] for key in ("wall_seconds", "fit_seconds", "train_samples_per_s")} for run in attempts
        ]}
    sequential_rate = results["sequential"]["train_samples_per_s"]
    results["speedup"] = results["stacked"]["train_samples_per_s"] / sequential_rate
    results["workers_speedup"] = results["stacked_workers"]["train_samples_per_s"] / sequential_rate
    results.update(compare(results["sequential"], results["stacked"]))
    results["workers_comparison"] = compare(results["sequential"], results["stacked_workers"])
    results["environment"]["load_average_at_end"] = load_average()
    return results


def print_fold_table(results: dict[str, Any]) -> None:
    """The two ways' training rates, the speedup and whether the folds' figures agree."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fold training of the default demo, {results['config']['epochs']} epochs")
    for column in ("way", "training samples/s", "training s", "folds"):
        table.add_column(column, justify="right")
    for way in WAYS:
        row = results[way]
        table.add_row(way, f"{row['train_samples_per_s']:.1f}", f"{row['fit_seconds']:.1f}", str(len(row["folds"])))
    Console().print(table)
    for way, speedup, compared in (
        ("stacked", results["speedup"], results),
        ("stacked in workers", results["workers_speedup"], results["workers_comparison"]),
    ):
        print(
            f"{way} / sequential: {speedup:.2f}x; per-fold figures identical: {compared['identical']}, "
            f"test predictions the same: {compared['same_predictions']} (largest differences: test loss "
            f"{compared['max_abs_test_loss_difference']:.3g}, training loss "
            f"{compared['max_abs_train_loss_difference']:.3g})"
        )
