"""Experiment loggers per fold, and the W&B summary run over folds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def is_wandb(logger_cfg: DictConfig | None) -> bool:
    return logger_cfg is not None and str(logger_cfg.get("_target_", "")).endswith("WandbLogger")


def fold_logger(
    logger_cfg: DictConfig | None, experiment: str, fold: int, run_config: dict[str, Any]
) -> Any:
    """The Lightning logger of one fold: a W&B run per fold (job type `fold`), or CSV."""
    if logger_cfg is None:
        return None
    if is_wandb(logger_cfg):
        # The config goes to wandb.init, which Lightning calls on rank zero only: reading
        # `logger.experiment` here would break DDP processes of other ranks.
        # (A partial, since `config` is also the name of instantiate's own argument.)
        factory = instantiate(
            logger_cfg, _partial_=True, name=f"{experiment}-fold{fold:02d}", group=experiment,
            job_type=logger_cfg.get("job_type", "fold"),
        )
        return factory(config={"fold": fold, **run_config})
    return instantiate(logger_cfg, version=f"fold_{fold:02d}")


def log_fold_result(logger: Any, result: dict[str, Any], class_names: list[str]) -> None:
    """Put test/uar, test/war and the confusion matrix into the fold's W&B run."""
    if logger is None or not type(logger).__name__ == "WandbLogger":
        return
    import wandb

    run = logger.experiment
    run.summary["test/uar"] = result["test/uar"]
    run.summary["test/war"] = result["test/war"]
    run.summary["num_test"] = result["num_test"]
    table = wandb.Table(columns=["true", "predicted", "count"])
    for i, row in enumerate(result["confusion_matrix"]):
        for j, count in enumerate(row):
            table.add_data(class_names[i], class_names[j], int(count))
    run.log({"test/confusion_matrix": table})


def finish_logger(logger: Any) -> None:
    """Close a fold's logger; W&B runs are always finished so sweeps never reuse one."""
    if logger is None:
        return
    if type(logger).__name__ == "WandbLogger":
        import wandb

        if logger._experiment is not None:  # only finish a run that was started
            logger.experiment.finish()
        elif wandb.run is not None:
            wandb.run.finish()
    else:
        logger.finalize("success")


def log_summary_run(
    logger_cfg: DictConfig | None,
    experiment: str,
    folds: list[dict[str, Any]],
    summary: dict[str, Any],
    run_config: dict[str, Any],
    output_dir: Path,
    images: dict[str, Path] | None = None,
) -> None:
    """A W&B run of job type `summary` holding the per-fold table and mean +- std.

    `images` maps W&B keys to image files (e.g. the t-SNE plot) logged into that run.
    """
    if not is_wandb(logger_cfg):
        return
    import wandb

    settings = OmegaConf.to_container(logger_cfg, resolve=True)
    run = wandb.init(
        project=settings.get("project"), entity=settings.get("entity"),
        mode=settings.get("mode", "offline"), dir=str(settings.get("save_dir", output_dir)),
        group=experiment, job_type="summary", name=f"{experiment}-summary",
        config=run_config, reinit="finish_previous",
    )
    try:
        table = wandb.Table(columns=["fold", "num_test", "test/uar", "test/war"])
        for fold in folds:
            table.add_data(fold["fold"], fold["num_test"], fold["test/uar"], fold["test/war"])
        run.log({"folds": table})
        for key, path in (images or {}).items():
            run.log({key: wandb.Image(str(path))})
        for key, value in summary.items():
            run.summary[key] = value
    finally:
        run.finish()
