"""The objects of a run, built from its typed settings (ser.settings): DataModules, the
LightningModule, the Trainer, callbacks. Each is built by Hydra from its group's
`_target_` config, resolved into plain values when the settings were made."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException

from ser.data.datamodule import FoldDataModule
from ser.data.feature_kinds import feature_weights_sha256
from ser.errors import ConfigError
from ser.models import registry
from ser.settings import Settings
from ser.settings.data import DatasetSettings
from ser.settings.groups import CallbacksSettings, ModelSettings, TrainerSettings
from ser.training.implementation import resolve_for_run
from ser.training.module import EmotionClassifier


def instantiate_datamodule(
    settings: DatasetSettings, stage: str, progress: bool = True, **overrides: Any
) -> FoldDataModule:
    """The DataModule a dataset group (`dataset`, `test_dataset`) describes, prepared.

    Every setting of the group is the DataModule's. `overrides` replace some of them (the
    cross-corpus target's signal length). `progress`: the run's setting, whether the
    feature extraction shows its bar.
    """
    arguments = dataclasses.asdict(settings)  # type: ignore[call-overload]
    datamodule = instantiate(arguments, _recursive_=False, _convert_="all", **overrides)
    datamodule.progress = progress
    datamodule.prepare_data()
    datamodule.setup(stage)
    return datamodule


def build_datamodule(settings: Settings) -> FoldDataModule:
    """The training corpus (`dataset`), its features extracted or loaded from the cache."""
    return instantiate_datamodule(settings.dataset, "fit", progress=settings.progress)


def check_network(model: ModelSettings) -> None:
    """Refuse a `model.net` of a registered network that it would refuse, before anything is
    built or written: its arguments checked against ser.models.registry (plain types, ranges),
    then the network built on the meta device (its own checks; nothing is allocated)."""
    description = registry.checkpoint_description(model.net.node | {"num_classes": 2, "input_dim": 39})
    if registry.NAME_KEY not in description:
        return  # a user's own network class: built as configured
    description["implementation"] = "reference"  # `auto` is resolved for the device later
    try:
        registry.expected_state_shapes(*registry.network_spec(description))
    except ValueError as error:  # NetworkSpecError, or the constructor's own argument checks
        raise ConfigError(f"model.net: {error}") from None


def build_module(settings: Settings, datamodule: FoldDataModule) -> EmotionClassifier:
    """The LightningModule `model` configures, with a fresh network and optimiser factory.

    The config holds every setting of the module, its `net` and its `_partial_` optimizer;
    only what the data decides is added here: the network's class count and input width
    (numbers), the class names and the metadata a checkpoint carries (plain values, never
    through OmegaConf); and `implementation=auto`
    becomes the implementation measured fastest on the trainer's device
    (ser.training.implementation), which the checkpoint records.
    """
    implementation = resolve_for_run(settings)
    sizes: dict[str, Any] = {"num_classes": datamodule.num_classes, "input_dim": datamodule.input_dim}
    if implementation is not None:
        sizes["implementation"] = implementation
    metadata = {
        "feature_settings": dataclasses.asdict(settings.features)  # type: ignore[call-overload]
        | {"signal_length": datamodule.feature_settings.signal_length},
        "net": registry.checkpoint_description(settings.model.net.node | sizes),  # a name, no class path
        "corpus": datamodule.corpus.name,
        # Features of a self-supervised model are only as good as its weights: prediction
        # checks that it loads the same bytes (ser.tools.inference).
        "feature_weights_sha256": feature_weights_sha256(datamodule.feature_settings),
        # Lets a restarted run check that a fold's last.ckpt belongs to this config and data.
        "config_hash": settings.config_hash,
        "data_hash": datamodule.data_identity(),
    }
    # The config builds the module as a partial; what the data names is passed to it after,
    # as plain Python strings. A class name comes from a manifest or a folder name: data,
    # never config. Merged into the config, `${oc.env:SECRET}` would be resolved and
    # `${oc.create:{_target_: ...}}` instantiated. _convert_="all": the module's settings
    # become plain lists and dicts, which is what its checkpoints may hold (they are read
    # back with weights_only=True).
    factory = instantiate(settings.model.node, net=sizes, _partial_=True, _convert_="all")
    return factory(class_names=[str(name) for name in datamodule.class_names], metadata=metadata)


def build_trainer(trainer: TrainerSettings, **arguments: Any) -> pl.Trainer:
    """The Lightning Trainer `trainer` configures, with the fold's loggers and callbacks.

    Lightning checks its settings as the Trainer is built (an unknown precision or strategy,
    a value of the wrong type): such a refusal is reported as a ConfigError naming `trainer`.
    """
    try:
        return instantiate(trainer.node, **arguments)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError | TypeError | MisconfigurationException):
            raise ConfigError(f"trainer: {str(cause).splitlines()[0]}") from error
        raise


def check_trainer(trainer: TrainerSettings) -> None:
    """Build the configured Trainer once, without loggers or callbacks, so that Lightning
    refuses a bad `trainer` setting before anything is written (not at the first fold)."""
    device_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = device_log.level
    device_log.setLevel(logging.WARNING)  # its "GPU available" lines belong to the folds
    try:
        build_trainer(trainer, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False)
    finally:
        device_log.setLevel(level)


def build_callbacks(settings: CallbacksSettings, fold_dir: Path) -> list[pl.Callback]:
    """The configured callbacks (`callbacks`); the checkpoint one writes into `fold_dir`."""
    callbacks = []
    for name, callback_cfg in settings.nodes.items():
        if name == "checkpoint":
            callbacks.append(instantiate(callback_cfg, dirpath=str(fold_dir)))
        else:
            callbacks.append(instantiate(callback_cfg))
    return callbacks
