"""`train(cfg)`: the cross-validation driver behind `python train.py`.

For each fold of the protocol: a fresh network and optimiser, training on the training
rows, evaluation of the last epoch's weights on the test rows (nothing is selected on
the test fold), one W&B run per fold. Each finished fold is written to
`folds/fold_KK.json` at once and `results.json` is rewritten after every fold, both
atomically, so an interrupted run loses at most the fold in progress and a restart with
the same output directory skips the finished folds.

Scaling out (docs/scaling.md): `cv.only_folds` makes a job run some folds only, and the
job that finds all fold files written gathers results.json (ser.gather); under DDP
(`trainer=ddp`) every process runs this driver and rank zero alone writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from ser import cv, distributed, gather, resume
from ser.data.datamodule import CorpusDataModule
from ser.models import registry
from ser.module import EmotionClassifier
from ser.settings import validate_settings
from ser.tracking import embeddings, provenance, results, wandb_runs
from ser.tracking.output_dir import claim_output_dir

log = logging.getLogger(__name__)

# Settings that say where and how loudly a run happens, not what it computes.
NON_DEFINING_KEYS = ("paths", "logger", "hydra", "progress", "callbacks", "plots", "objective")


class ConfigError(ValueError):
    """A setting with a value the framework cannot use."""


def experiment_name(cfg: DictConfig) -> str:
    """The name of the setup: corpus, model variant and features (W&B group)."""
    if cfg.get("experiment_name"):
        return str(cfg.experiment_name)
    return f"{cfg.dataset.corpus}-{cfg.model.variant}-{cfg.features.kind}"


NON_DEFINING_NESTED_KEYS = {
    "trainer": ("default_root_dir", "enable_progress_bar"),
    "dataset": ("cache_dir", "num_workers"),
}


def defining_config(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    defining = {k: v for k, v in container.items() if k not in NON_DEFINING_KEYS}
    if isinstance(defining.get("cv"), dict):
        # Which folds a job runs (fold-parallel jobs) is not part of what is computed:
        # every job of one experiment must share its config hash.
        defining["cv"] = {k: v for k, v in defining["cv"].items() if k not in gather.JOB_CV_KEYS}
    # Where files go and how they are read do not change what is computed, so equal
    # setups in different directories share a hash (sweep reports compare them).
    for group, keys in NON_DEFINING_NESTED_KEYS.items():
        if isinstance(defining.get(group), dict):
            defining[group] = {k: v for k, v in defining[group].items() if k not in keys}
    return defining


def config_hash(cfg: DictConfig) -> str:
    text = json.dumps(defining_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Dataset settings read by other groups (the trainer's epochs), not by the DataModule.
DATASET_PROTOCOL_KEYS = ("max_epochs",)


def build_datamodule(cfg: DictConfig) -> CorpusDataModule:
    settings = {k: v for k, v in cfg.dataset.items() if k not in DATASET_PROTOCOL_KEYS}
    datamodule = instantiate(OmegaConf.create(settings), _recursive_=False, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_folds(cfg: DictConfig, datamodule: CorpusDataModule) -> list[cv.Fold]:
    manifest = datamodule.manifest
    assert manifest is not None
    seed = cfg.cv.seed if cfg.cv.seed is not None else datamodule.corpus.split_seed
    folds = cfg.cv.folds
    return cv.make_folds(
        cfg.cv.strategy, len(manifest), None if folds is None else int(folds), int(seed),
        speakers=manifest.speakers, sessions=[u.session for u in manifest.utterances],
        group_by=str(cfg.cv.get("group_by") or "auto"),
    )


def build_module(cfg: DictConfig, datamodule: CorpusDataModule) -> EmotionClassifier:
    net = instantiate(cfg.model.net, num_classes=datamodule.num_classes, input_dim=datamodule.input_dim)
    metadata = {
        "feature_settings": OmegaConf.to_container(cfg.features, resolve=True)
        | {"signal_length": datamodule.feature_settings.signal_length},
        "net": registry.checkpoint_description(OmegaConf.to_container(cfg.model.net, resolve=True)
        | {"num_classes": datamodule.num_classes, "input_dim": datamodule.input_dim}),  # no class path
        "corpus": datamodule.corpus.name,
        # Lets a restarted run check that a fold's last.ckpt belongs to this config.
        "config_hash": config_hash(cfg),
    }
    return EmotionClassifier(
        net=net,
        optimizer=instantiate(cfg.optimizer),
        class_names=datamodule.class_names,
        label_smoothing=float(cfg.label_smoothing),
        metadata=metadata,
    )


def build_callbacks(cfg: DictConfig, fold_dir: Path) -> list[pl.Callback]:
    callbacks = []
    for name, callback_cfg in (cfg.get("callbacks") or {}).items():
        if callback_cfg is None:
            continue
        if name == "checkpoint":
            callbacks.append(instantiate(callback_cfg, dirpath=str(fold_dir)))
        else:
            callbacks.append(instantiate(callback_cfg))
    return callbacks


# -- validation split, checkpoint selection, resume (cv.validation, cv.select) ----------
SELECTIONS = ("last", "best_val_uar")
BEST_CHECKPOINT = "best"


def split_seed(cfg: DictConfig, datamodule: Any) -> int:
    """`cv.seed`, or the corpus's TIM-Net seed when it is null."""
    return int(cfg.cv.seed if cfg.cv.seed is not None else datamodule.corpus.split_seed)


def check_protocol(cfg: DictConfig) -> None:
    """Refuse settings that would choose anything without a validation split."""
    select = str(cfg.cv.get("select") or "last")
    if select not in SELECTIONS:
        raise ConfigError(f"cv.select must be one of {list(SELECTIONS)}, got {select!r}")
    check_objective(cfg)
    if cfg.cv.get("validation") is not None:
        return
    monitors = [
        (name, str(c.get("monitor"))) for name, c in (cfg.get("callbacks") or {}).items()
        if c is not None and str(c.get("monitor") or "").startswith("val/")
    ]
    if select != "last" or monitors:
        what = f"cv.select={select}" if select != "last" else f"callbacks.{monitors[0][0]}"
        raise ConfigError(
            f"{what} chooses on validation metrics, but cv.validation is null; set "
            f"cv.validation=0.1 (a split of each training fold; the test fold never chooses)"
        )


def protocol_record(cfg: DictConfig) -> dict[str, Any]:
    """The fold-protocol settings results.json reports next to the strategy."""
    return {
        "validation": cfg.cv.get("validation"),
        "select": str(cfg.cv.get("select") or "last"),
        "group_by": cfg.cv.get("group_by"),
    }


def split_validation(
    cfg: DictConfig, datamodule: Any, train_rows: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """(training rows, validation rows or None): `cv.validation` of the fold, stratified."""
    fraction = cfg.cv.get("validation")
    if fraction is None:
        return np.asarray(train_rows, dtype=np.int64), None
    labels = datamodule.targets.numpy()
    return cv.validation_split(train_rows, labels, float(fraction), split_seed(cfg, datamodule))


def protocol_callbacks(cfg: DictConfig, fold_seed: int, fold_dir: Path) -> list[pl.Callback]:
    """Dropout reseeded per batch (exact resume) and, for cv.select=best_val_uar, the best checkpoint.

    They come before the configured callbacks, so that `last.ckpt`, saved after them at
    each epoch's end, holds their up-to-date state.
    """
    callbacks: list[pl.Callback] = [resume.EpochSeeding(fold_seed)]
    if str(cfg.cv.get("select") or "last") == "best_val_uar":
        callbacks.append(ModelCheckpoint(
            dirpath=str(fold_dir), filename=BEST_CHECKPOINT, monitor="val/uar", mode="max", save_top_k=1,
            save_last=False, enable_version_counter=False, auto_insert_metric_name=False,
        ))
    return callbacks


def select_checkpoint(
    cfg: DictConfig, trainer: pl.Trainer, module: EmotionClassifier, datamodule: Any
) -> tuple[str | None, dict[str, Any]]:
    """The checkpoint to test (None: the last epoch's weights) and what chose it.

    With a validation split the chosen weights are also scored on it, and its size,
    rows and metrics go into the fold's result. The test fold plays no part.
    """
    select = str(cfg.cv.get("select") or "last")
    selected: str | None = None
    if select == "best_val_uar":
        best = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == "val/uar"]
        selected = (best[0].best_model_path or None) if best else None
        if selected is None:
            raise RuntimeError("cv.select=best_val_uar, but no best checkpoint was saved")
    record: dict[str, Any] = {"select": select}
    rows = datamodule.validation_indices
    if rows is None:
        return selected, record
    scores = trainer.validate(
        module, datamodule=datamodule, ckpt_path=selected, verbose=False, weights_only=True
    )[0]
    record.update({
        "selected_epoch": (
            resume.checkpoint_epoch(Path(selected)) if selected else int(trainer.current_epoch) - 1
        ),
        "num_validation": len(rows),
        "validation_rows": [int(i) for i in rows],
        **{key: float(scores[key]) for key in ("val/uar", "val/war", "val/loss") if key in scores},
    })
    return selected, record


def fold_test_speakers(datamodule: Any, test_rows: Any) -> list[str]:
    """The speakers of a fold's test rows (disjoint from training under cv=speaker)."""
    manifest = datamodule.manifest
    if manifest is None:
        return []
    speakers = manifest.speakers
    return sorted({str(speakers[int(i)]) for i in test_rows})


def run_fold(
    cfg: DictConfig,
    datamodule: CorpusDataModule,
    fold: int,
    train_rows: Any,
    test_rows: Any,
    output_dir: Path,
    experiment: str,
    run_config: dict[str, Any],
) -> dict[str, Any]:
    """Train a fresh model on one fold and test the weights `cv.select` picks.

    By default the last epoch's weights; with `cv.validation` and
    `cv.select=best_val_uar`, the epoch best on the fold's validation split. An
    interrupted fold continues from its `last.ckpt` (ser.resume).
    """
    fold_seed = int(cfg.seed) + fold
    pl.seed_everything(fold_seed, workers=True, verbose=False)
    train_rows, validation_rows = split_validation(cfg, datamodule, train_rows)
    datamodule.set_fold(train_rows, test_rows, validation_rows, shuffle_seed=fold_seed)
    fold_dir = output_dir / "checkpoints" / f"fold_{fold:02d}"
    module = build_module(cfg, datamodule)
    logger = wandb_runs.fold_logger(cfg.get("logger"), experiment, fold, run_config)
    started = time.time()
    try:
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            logger=logger if logger is not None else False,
            callbacks=protocol_callbacks(cfg, fold_seed, fold_dir) + build_callbacks(cfg, fold_dir),
            enable_progress_bar=bool(cfg.progress),
        )
        resume_from = resume.resumable_checkpoint(fold_dir, config_hash(cfg))
        resumed = {} if resume_from is None else {"resumed_from_epoch": resume.checkpoint_epoch(resume_from)}
        if resume_from is not None:
            print(f"[ser] {experiment}: fold {fold} resumes from {resume_from}", flush=True)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        selected, selection = select_checkpoint(cfg, trainer, module, datamodule)
        trainer.test(module, datamodule=datamodule, verbose=False, ckpt_path=selected, weights_only=True)
        if trainer.is_global_zero and OmegaConf.select(cfg, "plots.embeddings", default=False):
            embeddings.save_fold_embeddings(module, datamodule, fold, output_dir)
        confusion = module.test_confusion_matrix()
        evaluated = module.test_rows().tolist()
        if evaluated != sorted(int(i) for i in test_rows):  # each test utterance exactly once
            raise RuntimeError(
                f"fold {fold}: the test evaluated {len(evaluated)} distinct utterances, "
                f"not the fold's {len(test_rows)}"
            )
        metrics = trainer.callback_metrics
        result = {
            "fold": fold,
            "test/uar": float(metrics["test/uar"]),
            "test/war": float(metrics["test/war"]),
            "test/loss": float(metrics["test/loss"]),
            "confusion_matrix": confusion.tolist(),
            "num_test": int(confusion.sum()),
            "num_train": len(train_rows),
            "test_rows": [int(i) for i in test_rows],
            "training_seed": fold_seed,
            "epochs": int(trainer.current_epoch),
            "seconds": round(time.time() - started, 2),
        }
        result.update(selection, **resumed, test_speakers=fold_test_speakers(datamodule, test_rows))
        if trainer.is_global_zero:
            wandb_runs.log_fold_result(logger, result, datamodule.class_names)
        return result
    finally:
        wandb_runs.finish_logger(logger)


def output_directory(cfg: DictConfig) -> Path:
    try:
        return Path(cfg.paths.output_dir).resolve()
    except Exception as error:
        raise ConfigError(
            f"paths.output_dir cannot be resolved ({error}); set it or run through train.py"
        ) from error


def check_objective(cfg: DictConfig) -> None:
    """Refuse, before training, an `objective` the run will not measure."""
    objective = str(cfg.get("objective") or "test/uar")
    with_validation = cfg.cv.get("validation") is not None
    measured = [*results.METRICS, *(results.OPTIONAL_METRICS if with_validation else ())]
    if objective not in measured:
        needs = " (val/... needs cv.validation, e.g. cv.validation=0.1)" if not with_validation else ""
        raise ConfigError(f"objective={objective} is not measured by this run; expected one of {measured}{needs}")


def objective_value(cfg: DictConfig, summary: dict[str, Any]) -> float:
    """What train() returns to a sweeper: the mean over folds of `cfg.objective`.

    The default, test/uar, is the figure to report. A search that chooses settings by
    it chooses on the test folds, so the hpo sweep sets `objective=val/uar` with a
    validation split carved from each training fold.
    """
    objective = str(cfg.get("objective") or "test/uar")
    key = f"{objective}_mean"
    if key not in summary:
        raise ConfigError(
            f"objective={objective} is not measured by this run; expected one of "
            f"{sorted(k[: -len('_mean')] for k in summary if k.endswith('_mean'))} "
            f"(val/uar needs cv.validation, e.g. cv.validation=0.1)"
        )
    return float(summary[key])


def train(cfg: DictConfig) -> float:
    """Run the configured cross-validation; return the mean test UAR over folds.

    `task=cross_corpus` hands over to ser.cross_corpus (train on one corpus, test on
    another).
    """
    validate_settings(cfg)
    check_protocol(cfg)
    distributed.check_launch(cfg)
    task = str(cfg.get("task") or "cross_validation")
    if task == "cross_corpus":
        from ser.cross_corpus import train_cross_corpus

        return train_cross_corpus(cfg)
    if task != "cross_validation":
        raise ConfigError(f"task must be cross_validation or cross_corpus, got {task!r}")
    output_dir = output_directory(cfg)
    # Refused, or locked for this run's folds, before anything is written (ser.tracking.output_dir).
    with claim_output_dir(
        cfg, output_dir, config_hash(cfg), cfg.cv.get("only_folds"), writer=distributed.is_global_zero()
    ):
        return cross_validate(cfg, output_dir)


def cross_validate(cfg: DictConfig, output_dir: Path) -> float:
    """The folds of `train`, in the output directory it holds; returns the objective."""
    torch.set_float32_matmul_precision("high")
    experiment = experiment_name(cfg)
    this_hash = config_hash(cfg)
    results_path = output_dir / results.RESULTS_FILE
    datamodule = build_datamodule(cfg)
    folds = build_folds(cfg, datamodule)
    # cv.only_folds: this job runs some of the folds (fold-parallel jobs, ser.gather).
    fold_parallel = cfg.cv.get("only_folds") is not None
    selected = gather.select_folds(cfg.cv.get("only_folds"), len(folds))
    run_config = defining_config(cfg)
    record: dict[str, Any] = {
        "experiment": experiment,
        # The setup without the corpus, and the Hydra choices/overrides that made it:
        # how `sweep.py report` tells the variants of a sweep apart.
        "variant": f"{cfg.model.variant}-{cfg.features.kind}",
        "hydra": provenance.hydra_job_info(),
        "status": "running",
        "config_hash": this_hash,
        "corpus": datamodule.corpus.name,
        "class_names": datamodule.class_names,
        "num_utterances": len(datamodule.manifest),
        "class_counts": datamodule.manifest.class_counts(),
        "seeds": {
            "training": int(cfg.seed),
            "split": int(cfg.cv.seed if cfg.cv.seed is not None else datamodule.corpus.split_seed),
        },
        "cv": {"strategy": cfg.cv.strategy, "folds": len(folds)} | protocol_record(cfg),
        "skipped_files": datamodule.skipped_files,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": provenance.package_versions(),
        "git": provenance.git_commit(),
        "machine": provenance.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "folds": [],
    }

    # Under DDP every process runs this function; rank zero alone writes files.
    if distributed.is_global_zero():
        gather.write_header(output_dir, record)
    finished: list[dict[str, Any]] = []
    for fold, (train_rows, test_rows) in enumerate(folds):
        if fold not in selected:
            continue
        path = results.fold_path(output_dir, fold)
        if path.exists():
            saved = results.read_json(path)
            if saved.get("config_hash") == this_hash:
                log.info("fold %d already finished in %s; skipping", fold, path)
                finished.append(saved["result"])
                continue
        log.info("fold %d/%d: %d train, %d test", fold + 1, len(folds), len(train_rows), len(test_rows))
        print(f"[ser] {experiment}: fold {fold + 1}/{len(folds)}", flush=True)
        result = run_fold(cfg, datamodule, fold, train_rows, test_rows, output_dir, experiment, run_config)
        finished.append(result)
        if distributed.is_global_zero():
            results.atomic_write_json({"config_hash": this_hash, "result": result}, path)
            if not fold_parallel:  # fold-parallel jobs leave results.json to the gather
                record["folds"] = finished
                results.atomic_write_json(record, results_path)

    if not distributed.is_global_zero():
        return objective_value(cfg, results.summarise(finished))
    if fold_parallel:
        # Whichever job finds every fold finished writes results.json and the summary.
        try:
            record = gather.gather(output_dir)
        except gather.IncompleteError as waiting:
            print(f"[ser] {experiment}: folds {selected} finished; {waiting}", flush=True)
            return objective_value(cfg, results.summarise(finished))
        finished = record["folds"]
    summary = results.summarise(finished)
    record.update(folds=finished, summary=summary, status="complete")
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.atomic_write_json(record, results_path)
    results.print_table(f"{experiment}  ({output_dir})", finished, summary)
    if not fold_parallel or gather.claim_summary(output_dir):  # one W&B summary run
        images = {}  # plotted by the one job that writes the summary, from every fold's file
        if OmegaConf.select(cfg, "plots.embeddings", default=False):
            plot = embeddings.plot_run_embeddings(
                output_dir, datamodule.class_names, len(folds), seed=int(cfg.seed), title=experiment
            )
            if plot is not None:
                images["embeddings/tsne"] = plot
        wandb_runs.log_summary_run(
            cfg.get("logger"), experiment, finished, summary, run_config, output_dir, images=images
        )
    return objective_value(cfg, summary)
