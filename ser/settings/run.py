"""The typed form of a run's config, built once by the engine (`settings_from_config`).

Hydra composes a `DictConfig`; `ser.training.engine.train` turns it into one `Settings`
here, before anything is built or written, and passes that, never the DictConfig, to
everything below it. Building it is the one check of every setting: values a schema
types at composition (ser.settings.data), ranges (ser.settings.rules), and the shape of
the `_target_` groups (ser.settings.groups). A refused setting is named in one line:

    trainer.max_epochs=-1: expected a whole number >= 1

The config hash and the defining config are the engine's, computed from the composed
config (ser.training.config), and carried here for the folds' checkpoints and W&B runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from ser.errors import ConfigError
from ser.settings.data import CVSettings, DatasetSettings, FeatureRecipe
from ser.settings.groups import (
    CallbacksSettings,
    CrossCorpusSettings,
    FusionSettings,
    Kernels,
    LoggerSettings,
    ModelSettings,
    NetworkSettings,
    OptimizerSettings,
    Regularizer,
    SqueezeExcitation,
    TrainerSettings,
)
from ser.settings.rules import SEED, Checked, SettingError, build, setting


@dataclass(frozen=True)
class Settings(Checked):
    """Every setting of a run, typed and checked (see the module doc)."""

    seed: int = setting(SEED)  # training seed: fold k trains with seed + k
    experiment_name: str | None
    objective: str
    progress: bool
    plot_embeddings: bool
    variant: str  # the network's label (set by the model config)
    task: str  # the protocol's class path (task._target_)
    dataset: DatasetSettings
    features: FeatureRecipe
    cv: CVSettings
    trainer: TrainerSettings
    model: ModelSettings
    callbacks: CallbacksSettings
    logger: LoggerSettings
    fusion: FusionSettings | None = None
    test_dataset: DatasetSettings | None = None
    cross_corpus: CrossCorpusSettings | None = None
    # From the composed config (ser.training.config): what identifies the experiment.
    config_hash: str = ""
    run_config: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        for key in ("progress", "plot_embeddings"):
            if not isinstance(getattr(self, key), bool):
                name = "plots.embeddings" if key == "plot_embeddings" else key
                raise SettingError(name, getattr(self, key), "true or false")

    @property
    def task_name(self) -> str:
        """The protocol's class name (CrossValidation, CrossCorpus)."""
        return self.task.rsplit(".", 1)[-1]


def check_resolves(cfg: DictConfig, groups: Iterable[str] | None = None) -> None:
    """Raise :class:`ConfigError` naming the first setting that has no value: a `???` left
    unset, or an interpolation that fails (`seed=${oc.env:UNSET}`). Read before anything
    else, so OmegaConf's own multi-line error never reaches the user."""
    for group in cfg if groups is None else groups:
        if group not in cfg:
            continue
        try:
            node = cfg[group]  # a scalar setting is resolved by reading it
            if OmegaConf.is_config(node):
                OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as error:
            raise ConfigError(f"Missing mandatory value: {error.full_key}") from None
        except OmegaConfBaseException as error:
            reason = str(error).splitlines()[0]
            raise ConfigError(f"{error.full_key or group}: {reason}") from None


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


# The config group of each schema'd key (`test_dataset` is a `dataset` option).
SCHEMA_GROUPS = {"dataset": "dataset", "test_dataset": "dataset", "features": "features", "cv": "cv"}


def _schema_of(node: Any, prefix: str, base: type) -> type:
    """The dataclass a group option names as its schema (ser.settings.data)."""
    schema = OmegaConf.get_type(node) if OmegaConf.is_config(node) else None
    if not isinstance(schema, type) or not issubclass(schema, base):
        group = SCHEMA_GROUPS[prefix]
        raise ConfigError(
            f"{prefix} is not a {group} config of this project: its defaults list must name a schema "
            f"first (e.g. /schema/{group}@_here_: ..., ser/settings/data.py), got {_plain(node)!r}"
        )
    return schema


def typed_group(node: Any, prefix: str, base: type) -> Any:
    """The typed settings of a schema'd group option (`dataset`, `test_dataset`, `features`, `cv`)."""
    schema = _schema_of(node, prefix, base)
    values = _plain(node)
    known = {item.name for item in fields(schema)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]} is not a setting of {prefix}; expected one of {sorted(known)}")
    return build(schema, prefix, values)


def dataset_settings(cfg: DictConfig) -> DatasetSettings:
    """The typed `dataset` of a composed config, it and its `features` checked (the data
    summary's settings: the groups it uses)."""
    check_resolves(cfg, ("dataset", "features"))
    typed_group(cfg.features, "features", FeatureRecipe)
    return typed_group(cfg.dataset, "dataset", DatasetSettings)


def _node(cfg: DictConfig, key: str) -> dict[str, Any]:
    value = _plain(cfg.get(key))
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a config of its group (ser/conf/{key}/), got {value!r}")
    return value


def _fusion(cfg: DictConfig) -> FusionSettings | None:
    parts = _node(cfg, "fusion")
    if not parts:
        return None
    try:
        return FusionSettings(
            build(Kernels, "fusion.kernels", parts["kernels"]), build(SqueezeExcitation, "fusion.se", parts["se"]),
            build(Regularizer, "fusion.regularizer", parts["regularizer"]),
        )
    except (KeyError, TypeError) as error:
        raise ConfigError(f"fusion: expected the model/kernels, model/se and model/regularizer options ({error})") from None


def _model(cfg: DictConfig) -> ModelSettings:
    node = _node(cfg, "model")
    net = build(NetworkSettings, "model.net", {"node": dict(node.get("net") or {})})
    optimizer = node.get("optimizer")
    typed_optimizer = None if optimizer is None else build(OptimizerSettings, "model.optimizer", {"node": dict(optimizer)})
    return build(ModelSettings, "model", {"node": node, "net": net, "optimizer": typed_optimizer})


def _loggers(cfg: DictConfig) -> LoggerSettings:
    value = _plain(cfg.get("logger"))
    if value is None:
        return LoggerSettings()
    if not isinstance(value, Mapping) or "_target_" in value:
        raise ConfigError(
            "logger must map logger names to logger configs (logger=wandb, logger=csv, "
            "logger=[wandb,csv] or logger=none), as the files of ser/conf/logger do"
        )
    return LoggerSettings({str(name): node for name, node in value.items() if node is not None})


def _cross_corpus(cfg: DictConfig) -> CrossCorpusSettings | None:
    if "cross_corpus" not in cfg:
        return None
    return build(CrossCorpusSettings, "cross_corpus", _node(cfg, "cross_corpus"))


def settings_from_config(cfg: DictConfig, config_hash: str = "", run_config: dict[str, Any] | None = None) -> Settings:
    """The typed, checked settings of a composed run config (see the module doc)."""
    check_resolves(cfg)
    features = typed_group(cfg.features, "features", FeatureRecipe)
    dataset = typed_group(cfg.dataset, "dataset", DatasetSettings)
    has_target = cfg.get("test_dataset") is not None
    test_dataset = typed_group(cfg.test_dataset, "test_dataset", DatasetSettings) if has_target else None
    trainer = build(TrainerSettings, "trainer", {"node": _node(cfg, "trainer")})
    cv = typed_group(cfg.cv, "cv", CVSettings)
    fusion = _fusion(cfg)
    model = _model(cfg)
    cross_corpus = _cross_corpus(cfg)
    callbacks = build(CallbacksSettings, "callbacks", {
        "nodes": {str(name): node for name, node in _node(cfg, "callbacks").items() if node is not None}
    })
    logger = _loggers(cfg)
    task = _node(cfg, "task")
    return Settings(
        seed=cfg.seed, experiment_name=cfg.get("experiment_name"), objective=str(cfg.objective),
        progress=cfg.progress, plot_embeddings=cfg.plots.embeddings, variant=str(cfg.variant),
        task=str(task.get("_target_", "")), dataset=dataset, features=features, cv=cv, trainer=trainer,
        model=model, fusion=fusion, callbacks=callbacks, logger=logger, test_dataset=test_dataset,
        cross_corpus=cross_corpus, config_hash=config_hash, run_config=dict(run_config or {}),
    )
