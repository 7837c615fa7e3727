"""The objects of a run, built from its config: DataModules, the LightningModule, callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ser.data.datamodule import FoldDataModule
from ser.data.feature_kinds import feature_weights_sha256
from ser.models import registry
from ser.training.config import config_hash
from ser.training.implementation import resolve_for_run
from ser.training.module import EmotionClassifier


def instantiate_datamodule(
    settings: DictConfig, stage: str, progress: bool = True, **overrides: Any
) -> FoldDataModule:
    """The DataModule a dataset group (`dataset`, `test_dataset`) describes, prepared.

    Every setting of the group is the DataModule's. `overrides` replace some of them (the
    cross-corpus target's signal length). `progress`: the run's setting, whether the
    feature extraction shows its bar.
    """
    datamodule = instantiate(settings, _recursive_=False, _convert_="all", **overrides)
    datamodule.progress = progress
    datamodule.prepare_data()
    datamodule.setup(stage)
    return datamodule


def build_datamodule(cfg: DictConfig) -> FoldDataModule:
    """The training corpus (`dataset`), its features extracted or loaded from the cache."""
    return instantiate_datamodule(cfg.dataset, "fit", progress=bool(cfg.progress))


def build_module(cfg: DictConfig, datamodule: FoldDataModule) -> EmotionClassifier:
    """The LightningModule `model` configures, with a fresh network and optimiser factory.

    The config holds every setting of the module, its `net` and its `_partial_` optimizer;
    only what the data decides is added here: the network's class count and input width,
    the class names, and the metadata a checkpoint carries; and `implementation=auto`
    becomes the implementation measured fastest on the trainer's device
    (ser.training.implementation), which the checkpoint records.
    """
    implementation = resolve_for_run(cfg)
    sizes: dict[str, Any] = {"num_classes": datamodule.num_classes, "input_dim": datamodule.input_dim}
    if implementation is not None:
        sizes["implementation"] = implementation
    metadata = {
        "feature_settings": OmegaConf.to_container(cfg.features, resolve=True)
        | {"signal_length": datamodule.feature_settings.signal_length},
        "net": registry.checkpoint_description(
            OmegaConf.to_container(cfg.model.net, resolve=True) | sizes  # a name, no class path
        ),
        "corpus": datamodule.corpus.name,
        # Features of a self-supervised model are only as good as its weights: prediction
        # checks that it loads the same bytes (ser.tools.inference).
        "feature_weights_sha256": feature_weights_sha256(datamodule.feature_settings),
        # Lets a restarted run check that a fold's last.ckpt belongs to this config.
        "config_hash": config_hash(cfg),
    }
    # _convert_="all": the module's arguments become plain lists and dicts, which is what
    # its checkpoints may hold (they are read back with weights_only=True).
    return instantiate(
        cfg.model, net=sizes, class_names=list(datamodule.class_names), metadata=metadata,
        _convert_="all",
    )


def build_callbacks(cfg: DictConfig, fold_dir: Path) -> list[pl.Callback]:
    """The configured callbacks (`callbacks`); the checkpoint one writes into `fold_dir`."""
    callbacks = []
    for name, callback_cfg in (cfg.get("callbacks") or {}).items():
        if callback_cfg is None:
            continue
        if name == "checkpoint":
            callbacks.append(instantiate(callback_cfg, dirpath=str(fold_dir)))
        else:
            callbacks.append(instantiate(callback_cfg))
    return callbacks
