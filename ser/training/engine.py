"""`train(cfg)`: the one experiment loop behind `python train.py`, for every protocol.

The protocol (`task._target_`: ser.training.protocols) says what the data and the units
of training are; this engine checks the settings before anything is built, holds the
output directory (ser.tracking.output_dir), writes the record's header, skips units
already finished with this config hash, trains the others one at a time
(ser.training.fold) or together (`cv.stack`, ser.training.stacked; on a CPU split
over `cv.workers` processes), writes each unit's
result atomically as it ends, and finally results.json, the table, the W&B summary run
and the objective for sweepers. Under DDP rank zero alone writes; of fold-parallel jobs
(`cv.only_folds`) the last to finish gathers results.json (ser.training.gather).
The composed config becomes typed settings once (ser.settings); nothing below the
engine sees the DictConfig.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ser.data.datamodule import FoldDataModule
from ser.errors import ConfigError
from ser.settings import Settings
from ser.tracking import config_tree, embeddings, figures, provenance, results, wandb_runs
from ser.tracking.output_dir import check_unclaimed, claim_output_dir
from ser.tracking.progress import RunProgress
from ser.training import distributed, gather
from ser.training.build import check_network, check_trainer
from ser.training.config import output_directory, typed_settings
from ser.training.fold import ExperimentContext, run_fold
from ser.training.implementation import check_implementation
from ser.training.protocols.base import ExperimentProtocol, Unit
from ser.training.selection import check_selection
from ser.training.stacked.policy import resolve_stacking
from ser.training.stacked.workers import check_workers, train_together

log = logging.getLogger(__name__)


def check_objective(settings: Settings) -> None:
    """Refuse, before training, an `objective` the run will not measure."""
    objective = settings.objective
    with_validation = settings.cv.validation is not None
    measured = [*results.METRICS, *(results.OPTIONAL_METRICS if with_validation else ())]
    if objective not in measured:
        needs = " (val/... needs cv.validation, e.g. cv.validation=0.1)" if not with_validation else ""
        raise ConfigError(f"objective={objective} is not measured by this run; expected one of {measured}{needs}")


def objective_value(settings: Settings, summary: dict[str, Any]) -> float:
    """What train() returns to a sweeper: the mean over units of `objective`.

    The default, test/uar, is the figure to report. A search that chooses settings by
    it chooses on the test folds, so the hpo sweep sets `objective=val/uar` with a
    validation split carved from each training fold.
    """
    objective = settings.objective
    key = f"{objective}_mean"
    if key not in summary:
        raise ConfigError(
            f"objective={objective} is not measured by this run; expected one of "
            f"{sorted(k[: -len('_mean')] for k in summary if k.endswith('_mean'))} "
            f"(val/uar needs cv.validation, e.g. cv.validation=0.1)"
        )
    return float(summary[key])


def build_protocol(cfg: DictConfig, settings: Settings) -> ExperimentProtocol:
    """The protocol `task._target_` names, built with the run's typed settings."""
    task = cfg.get("task")
    if not isinstance(task, DictConfig) or "_target_" not in task:
        raise ConfigError(
            f"task must be a task config with a _target_ (task=cross_validation or "
            f"task=cross_corpus), got {task!r}"
        )
    # A partial: the protocol takes the run's settings, not a copy merged into `task`.
    protocol = instantiate(task, _partial_=True)(settings)
    if not isinstance(protocol, ExperimentProtocol):
        raise ConfigError(f"task._target_={task._target_} is not a protocol (ser.training.protocols)")
    return protocol


def train(cfg: DictConfig) -> float:
    """Run the experiment `cfg` describes; return the mean of `objective` over its units."""
    output_dir = output_directory(cfg)
    settings = typed_settings(cfg)  # every setting checked, once; nothing below sees `cfg`
    check_selection(settings)
    check_objective(settings)
    implementation = check_implementation(settings)
    check_network(settings.model)
    distributed.check_launch(settings.trainer)
    check_trainer(settings.trainer)
    stacked = resolve_stacking(settings)
    check_workers(settings, stacked)
    protocol = build_protocol(cfg, settings)
    this_hash = settings.config_hash
    check_unclaimed(output_dir, this_hash)  # another configuration's directory: before reading the data
    writer = distributed.is_global_zero()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if writer:
        config_tree.print_config_tree(resolved)
    datamodule = protocol.prepare()
    # The data's identity is part of what a rerun must find again: a directory whose work
    # was done on other data is refused, or locked for this run's units, before anything
    # is written into it.
    unit_paths = [protocol.unit_path(output_dir, unit.index) for unit in protocol.units()]
    with claim_output_dir(
        OmegaConf.to_yaml(cfg), output_dir, this_hash, protocol.only_units, writer=writer,
        data_hash=datamodule.data_identity(), unit_paths=unit_paths,
    ):
        return run_experiment(settings, resolved, protocol, datamodule, output_dir, implementation, stacked)


def finished_result(path: Path, this_hash: str, data_hash: str) -> dict[str, Any] | None:
    """The result a unit's file holds, if it was computed with this config hash on this data."""
    if not path.exists():
        return None
    saved = results.read_json(path)
    return saved["result"] if (saved.get("config_hash"), saved.get("data_hash")) == (this_hash, data_hash) else None


def run_experiment(
    settings: Settings, config: dict[str, Any], protocol: ExperimentProtocol, datamodule: FoldDataModule,
    output_dir: Path, implementation: str | None = None, stacked: bool = False,
) -> float:
    """The units of `protocol` on its prepared `datamodule`, in the output directory `train`
    holds; returns the objective.

    `config`: the resolved config, as config.yaml and results.json record it.
    `implementation`: what `model.net.implementation` resolved to on this run's device;
    `stacked`: whether the units train together (`cv.stack`, ser.training.stacked).
    """
    torch.set_float32_matmul_precision("high")
    # Under DDP every process runs this function; rank zero alone writes files.
    writer = distributed.is_global_zero()
    if writer:
        config_tree.save_config(config, output_dir)
    experiment = protocol.experiment_name()
    this_hash, data_hash = settings.config_hash, datamodule.data_identity()
    results_path = output_dir / results.RESULTS_FILE
    units = protocol.units()
    # Some units per job (fold-parallel jobs share the directory; ser.training.gather).
    parallel = protocol.only_units is not None
    selected = gather.select_folds(protocol.only_units, len(units))
    run_config = settings.run_config
    context = ExperimentContext(output_dir, experiment)
    units_key = protocol.results_key
    record: dict[str, Any] = {
        "experiment": experiment,
        "status": "running",
        "config_hash": this_hash,
        "data_hash": data_hash,
        **protocol.record(),
        "config": config,
        "implementation": implementation,
        "stacked": stacked,
        "versions": provenance.package_versions(),
        "git": provenance.git_commit(),
        "machine": provenance.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        units_key: [],
    }
    if writer and protocol.gatherable:
        gather.write_header(output_dir, record)
    saved_results = {
        unit.index: finished_result(protocol.unit_path(output_dir, unit.index), this_hash, data_hash)
        for unit in units if unit.index in selected
    }
    finished: list[dict[str, Any]] = []
    pending: list[Unit] = []
    for unit in units:
        if unit.index not in selected:
            continue
        saved = saved_results[unit.index]
        if saved is None:
            pending.append(unit)
            continue
        log.info(
            "%s %d already finished in %s; skipping", protocol.index_key, unit.index,
            protocol.unit_path(output_dir, unit.index),
        )
        finished.append(saved)

    def keep(result: dict[str, Any]) -> None:
        """A unit's result: into `finished` (in unit order), its file and results.json."""
        relabelled = protocol.relabel(result)
        finished.append(relabelled)
        finished.sort(key=lambda unit_result: unit_result[protocol.index_key])
        if writer:
            unit_file = protocol.unit_path(output_dir, relabelled[protocol.index_key])
            results.atomic_write_json(
                {"config_hash": this_hash, "data_hash": data_hash, "result": relabelled}, unit_file
            )
            if not parallel:  # fold-parallel jobs leave results.json to the gather
                record[units_key] = finished
                results.atomic_write_json(record, results_path)

    # The run-level line (`progress`): which unit of how many, and the time left.
    progress = RunProgress(len(pending)) if settings.progress else None
    if stacked and pending:  # every pending unit in one Trainer (cv.stack)
        if progress is not None and writer:
            print(f"[ser] {experiment}: {progress.line(protocol.announce_together(pending, len(units)))}", flush=True)
        train_together(settings, datamodule, pending, context, keep)
        pending = []
    for unit in pending:  # one unit after another
        log.info(
            "%s %d/%d: %d train, %d test", protocol.index_key, unit.index + 1, len(units),
            len(unit.train_rows), len(unit.test_rows),
        )
        if progress is not None and writer:
            print(f"[ser] {experiment}: {progress.line(protocol.announce(unit, len(units)))}", flush=True)
        keep(run_fold(settings, datamodule, unit, context))
        if progress is not None:
            progress.done()

    if not writer:
        return objective_value(settings, results.summarise(finished))
    if parallel:
        # Whichever job finds every unit finished writes results.json and the summary.
        try:
            record = gather.gather(output_dir)
        except gather.IncompleteError as waiting:
            print(f"[ser] {experiment}: folds {selected} finished; {waiting}", flush=True)
            return objective_value(settings, results.summarise(finished))
        finished = record[units_key]
    summary = results.summarise(finished)
    record.update({units_key: finished, "summary": summary, "status": "complete"})
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.atomic_write_json(record, results_path)
    rows = [dict(result, fold=result[protocol.index_key]) for result in finished]  # the table's rows
    results.print_table(f"{experiment}  ({output_dir})", rows, summary)
    if not parallel or gather.claim_summary(output_dir):  # one set of figures, one W&B summary run
        log_summary(
            settings, experiment, rows, summary, run_config, output_dir, datamodule.class_names,
            protocol.index_key,
        )
    return objective_value(settings, summary)


def log_summary(
    settings: Settings,
    experiment: str,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    run_config: dict[str, Any],
    output_dir: Path,
    class_names: list[str],
    index_key: str = "fold",
) -> None:
    """The run's figures (ser.tracking.figures) and the W&B summary run holding them, with
    the t-SNE of every unit's embeddings (`plots.embeddings`)."""
    # Drawn by the one job that writes the summary, from every unit's files.
    images = figures.write_run_figures(output_dir, rows, class_names, experiment, index_key)
    log.info("wrote %s", ", ".join(str(path) for path in images.values()))
    if settings.plot_embeddings:
        plot = embeddings.plot_run_embeddings(
            output_dir, class_names, len(rows), seed=settings.seed, title=experiment
        )
        if plot is not None:
            images["embeddings/tsne"] = plot
    wandb_runs.log_summary_run(
        settings.logger, experiment, rows, summary, run_config, output_dir, images=images,
        tags=wandb_runs.run_tags(settings),
    )
