"""`train(cfg)`: the cross-validation driver behind `python train.py`.

For each fold of the protocol: a fresh network and optimiser, training on the training
rows, evaluation of the last epoch's weights on the test rows (nothing is selected on
the test fold), one W&B run per fold. Each finished fold is written to
`folds/fold_KK.json` at once and `results.json` is rewritten after every fold, both
atomically, so an interrupted run loses at most the fold in progress and a restart with
the same output directory skips the finished folds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ser import cv, provenance, results, tracking
from ser.data.datamodule import CorpusDataModule
from ser.module import EmotionClassifier

log = logging.getLogger(__name__)

# Settings that say where and how loudly a run happens, not what it computes.
NON_DEFINING_KEYS = ("paths", "logger", "hydra", "progress", "callbacks")


class ConfigError(ValueError):
    """A setting with a value the framework cannot use."""


def experiment_name(cfg: DictConfig) -> str:
    """The name of the setup: corpus, model variant and features (W&B group)."""
    if cfg.get("experiment_name"):
        return str(cfg.experiment_name)
    return f"{cfg.dataset.corpus}-{cfg.model.variant}-{cfg.features.kind}"


def defining_config(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in container.items() if k not in NON_DEFINING_KEYS}


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
    return cv.make_folds(
        cfg.cv.strategy, len(manifest), int(cfg.cv.folds), int(seed), speakers=manifest.speakers,
    )


def build_module(cfg: DictConfig, datamodule: CorpusDataModule) -> EmotionClassifier:
    net = instantiate(cfg.model.net, num_classes=datamodule.num_classes, input_dim=datamodule.input_dim)
    metadata = {
        "feature_settings": OmegaConf.to_container(cfg.features, resolve=True)
        | {"signal_length": datamodule.feature_settings.signal_length},
        "net": OmegaConf.to_container(cfg.model.net, resolve=True)
        | {"num_classes": datamodule.num_classes, "input_dim": datamodule.input_dim},
        "corpus": datamodule.corpus.name,
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
    """Train a fresh model on one fold and evaluate its last-epoch weights."""
    fold_seed = int(cfg.seed) + fold
    pl.seed_everything(fold_seed, workers=True, verbose=False)
    datamodule.set_fold(train_rows, test_rows)
    module = build_module(cfg, datamodule)
    logger = tracking.fold_logger(cfg.get("logger"), experiment, fold, run_config)
    started = time.time()
    try:
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            logger=logger if logger is not None else False,
            callbacks=build_callbacks(cfg, output_dir / "checkpoints" / f"fold_{fold:02d}"),
            enable_progress_bar=bool(cfg.progress),
        )
        trainer.fit(module, datamodule=datamodule)
        trainer.test(module, datamodule=datamodule, verbose=False)
        confusion = module.test_confusion_matrix()
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
        tracking.log_fold_result(logger, result, datamodule.class_names)
        return result
    finally:
        tracking.finish_logger(logger)


def output_directory(cfg: DictConfig) -> Path:
    try:
        return Path(cfg.paths.output_dir).resolve()
    except Exception as error:
        raise ConfigError(
            f"paths.output_dir cannot be resolved ({error}); set it or run through train.py"
        ) from error


def train(cfg: DictConfig) -> float:
    """Run the configured cross-validation; return the mean test UAR over folds."""
    output_dir = output_directory(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_float32_matmul_precision("high")
    experiment = experiment_name(cfg)
    this_hash = config_hash(cfg)
    results_path = output_dir / results.RESULTS_FILE
    if results_path.exists():
        previous = results.read_json(results_path)
        if previous.get("config_hash") != this_hash:
            raise ConfigError(
                f"{results_path} holds results of a different configuration; choose a new "
                f"output directory (hydra.run.dir=...) instead of overwriting them"
            )

    datamodule = build_datamodule(cfg)
    folds = build_folds(cfg, datamodule)
    run_config = defining_config(cfg)
    record: dict[str, Any] = {
        "experiment": experiment,
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
        "cv": {"strategy": cfg.cv.strategy, "folds": len(folds)},
        "skipped_files": datamodule.skipped_files,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": provenance.package_versions(),
        "git": provenance.git_commit(),
        "machine": provenance.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "folds": [],
    }

    finished: list[dict[str, Any]] = []
    for fold, (train_rows, test_rows) in enumerate(folds):
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
        results.atomic_write_json({"config_hash": this_hash, "result": result}, path)
        finished.append(result)
        record["folds"] = finished
        results.atomic_write_json(record, results_path)

    summary = results.summarise(finished)
    record.update(folds=finished, summary=summary, status="complete")
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.atomic_write_json(record, results_path)
    results.print_table(f"{experiment}  ({output_dir})", finished, summary)
    tracking.log_summary_run(cfg.get("logger"), experiment, finished, summary, run_config, output_dir)
    return float(summary["test/uar_mean"])
