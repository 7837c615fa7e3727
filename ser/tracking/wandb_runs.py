"""Experiment loggers per fold (composed: `logger=[wandb,csv]`), and the W&B summary run.

`logger` is a mapping of logger name to its config (ser/conf/logger/*.yaml, each file one
entry, as in lightning-hydra-template), or null (`logger=none`), typed as
ser.settings.groups.LoggerSettings. Each fold gets every
configured logger: W&B one run per fold (job type `fold`), CSV a `fold_KK` version.
W&B runs are grouped by experiment and tagged with the corpus, variant, features, task
and sweep, so a workspace groups and filters them by experiment and by sweep.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from pytorch_lightning.loggers import WandbLogger

from ser.settings import Settings
from ser.settings.groups import LoggerSettings

log = logging.getLogger(__name__)


def new_run_id(logger: LoggerSettings) -> str | None:
    """A fresh W&B run id when W&B logs this run, else None."""
    if logger.wandb is None:
        return None
    # Any string of letters and digits is a valid id; W&B's own generator is not public API
    # (wandb.util.generate_id is gone in wandb 0.31).
    return uuid.uuid4().hex[:12]


def run_tags(settings: Settings) -> list[str]:
    """The tags of every W&B run of an experiment: what it is, the sweep it belongs to
    (ser.tracking.provenance.sweep_name) and the user's own (`logger.wandb.tags`)."""
    from ser.tracking.provenance import sweep_name

    sweep = sweep_name()
    tags = [f"corpus={settings.dataset.corpus}", f"variant={settings.variant}",
            f"features={settings.features.kind}"]
    if settings.task:
        tags.append(f"task={settings.task_name}")
    if sweep:
        tags.append(f"sweep={sweep}")
    entry = settings.logger.wandb
    own = (entry.get("tags") if entry is not None else None) or []
    return [*tags, *(str(tag) for tag in own if str(tag) not in tags)]


def fold_loggers(
    logger: LoggerSettings, experiment: str, fold: int, run_config: dict[str, Any],
    tags: Sequence[str] = (), run_id: str | None = None, concurrent: bool = False,
) -> list[Any]:
    """The Lightning loggers of one fold, one per configured logger.

    W&B: the fold's run is `<experiment>-foldKK` with id `run_id`; a resumed fold passes
    the id its first attempt used and continues that run (resume="allow"). `concurrent`:
    the run is one of several folds' open at once in this process (a stacked run), so it
    is created beside the others (reinit="create_new") rather than taking over W&B's
    global run, which Lightning's logger would otherwise reuse for every fold.
    """
    loggers = []
    for entry in logger.nodes.values():
        if not logger.is_wandb(entry):
            loggers.append(instantiate(entry, version=f"fold_{fold:02d}"))
            continue
        # The config goes to wandb.init, which Lightning calls on rank zero only: reading
        # `logger.experiment` here would break DDP processes of other ranks.
        # (A partial, since `config` is also the name of instantiate's own argument.)
        settings = {key: value for key, value in entry.items() if key != "tags"}
        factory = instantiate(
            settings, _partial_=True, name=f"{experiment}-fold{fold:02d}",
            group=experiment, job_type=entry.get("job_type", "fold"), tags=list(tags),
            id=run_id, resume="allow", **({"reinit": "create_new"} if concurrent else {}),
        )
        loggers.append(factory(config={"fold": fold, **run_config}))
    return loggers


def wandb_logger(loggers: Sequence[Any]) -> WandbLogger | None:
    return next((logger for logger in loggers if isinstance(logger, WandbLogger)), None)


def log_fold_result(loggers: Sequence[Any], result: dict[str, Any], class_names: list[str]) -> None:
    """Put test/uar, test/war and the confusion matrix (table and chart) into the fold's W&B run."""
    logger = wandb_logger(loggers)
    if logger is None:
        return
    import numpy as np
    import wandb

    run = logger.experiment
    run.summary["test/uar"] = result["test/uar"]
    run.summary["test/war"] = result["test/war"]
    run.summary["num_test"] = result["num_test"]
    matrix = np.asarray(result["confusion_matrix"], dtype=np.int64)
    table = wandb.Table(columns=["true", "predicted", "count"])
    for i, j in np.ndindex(matrix.shape):
        table.add_data(class_names[i], class_names[j], int(matrix[i, j]))
    # W&B's chart takes one (true, predicted) pair per utterance: the matrix, unrolled.
    true, predicted = np.nonzero(matrix)
    counts = matrix[true, predicted]
    chart = wandb.plot.confusion_matrix(
        y_true=np.repeat(true, counts).tolist(), preds=np.repeat(predicted, counts).tolist(),
        class_names=list(class_names), title="test confusion matrix",
    )
    run.log({"test/confusion_matrix": table, "test/confusion_matrix_chart": chart})


def finish_loggers(loggers: Sequence[Any]) -> None:
    """Close a fold's loggers; W&B runs are always finished so sweeps never reuse one."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            logger.finalize("success")
            continue
        import wandb

        # Lightning makes the fold's run wandb's current run (`wandb.run`) when it starts it;
        # finishing that one never starts a run only to end it, as `logger.experiment` would.
        if wandb.run is not None:
            wandb.run.finish()


FOLD_COLUMNS = ("num_test", "test/uar", "test/war", "val/uar", "epochs", "seconds")


def log_summary_run(
    logger: LoggerSettings,
    experiment: str,
    folds: list[dict[str, Any]],
    summary: dict[str, Any],
    run_config: dict[str, Any],
    output_dir: Path,
    images: dict[str, Path] | None = None,
    tags: Sequence[str] = (),
) -> None:
    """A W&B run of job type `summary`: the per-fold table, mean +- std, the run's config
    and `images` (W&B key -> image file: the run's figures, the t-SNE plot)."""
    settings = logger.wandb
    if settings is None:
        return
    import wandb

    run = wandb.init(
        project=settings.get("project"), entity=settings.get("entity"),
        mode=settings.get("mode", "offline"), dir=str(settings.get("save_dir") or output_dir),
        group=experiment, job_type="summary", name=f"{experiment}-summary", tags=list(tags),
        config=run_config, reinit="finish_previous",
    )
    try:
        columns = ["fold", *(c for c in FOLD_COLUMNS if all(fold.get(c) is not None for fold in folds))]
        table = wandb.Table(columns=columns, data=[[fold[c] for c in columns] for fold in folds])
        run.log({"folds": table, **{key: wandb.Image(str(path)) for key, path in (images or {}).items()}})
        for key, value in summary.items():
            run.summary[key] = value
    finally:
        run.finish()
