"""The typed settings of the groups whose nodes are library objects' arguments.

`trainer`, `model`, `callbacks` and `logger` are `_target_` configs: Hydra builds a
Lightning Trainer, the LightningModule, callbacks and loggers from them, and a user may
pass any argument those take (`+trainer.gradient_clip_val=1`). Their dataclasses hold the
resolved node to build from (`node`), the few values the framework reads itself, and the
ranges of the arguments it knows (`RULES`: checked where the argument is given). The
model's ablation switches (`fusion`, from model/kernels, model/se, model/regularizer) and
the cross-corpus task's settings have a fixed shape and are plain fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ser.errors import ConfigError
from ser.settings.rules import (
    COUNT,
    NON_NEGATIVE_COUNT,
    POSITIVE,
    PROBABILITY,
    Checked,
    Number,
    SettingError,
    setting,
)

Node = dict[str, Any]  # a resolved `_target_` config, as `hydra.utils.instantiate` takes it


def check_given(node: Mapping[str, Any], rules: Mapping[str, Number]) -> None:
    """Check the arguments of `node` that `rules` bound; those not given are the library's."""
    for key, rule in rules.items():
        if key in node and not rule.fits(node[key]):
            raise SettingError(key, node[key], rule.describe())


@dataclass(frozen=True)
class TrainerSettings(Checked):
    """`trainer`: the Lightning Trainer's arguments, and what the framework reads of them."""

    node: Node
    RULES: ClassVar[dict[str, Number]] = {"max_epochs": COUNT, "log_every_n_steps": COUNT}
    # What an argument a trainer config leaves out means (ser/conf/trainer/default.yaml
    # gives accelerator, devices and precision): Lightning's defaults, except that a
    # config without `devices` is read as one device, not every one.
    ABSENT: ClassVar[Node] = {
        "accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto",
        "precision": "32-true", "min_epochs": None,
    }

    def check(self) -> None:
        if "max_epochs" not in self.node:
            raise ConfigError("trainer.max_epochs is not set: the folds need a number of epochs")
        check_given(self.node, self.RULES)

    def get(self, key: str, default: Any = None) -> Any:
        """An argument of the Trainer: as given, else what its absence means (`ABSENT`), else `default`."""
        return self.node.get(key, self.ABSENT.get(key, default))

    @property
    def max_epochs(self) -> int:
        return int(self.node["max_epochs"])

    @property
    def min_epochs(self) -> int:
        return int(self.get("min_epochs") or 0)

    @property
    def accelerator(self) -> str:
        return str(self.get("accelerator"))

    @property
    def devices(self) -> Any:
        return self.get("devices")

    @property
    def precision(self) -> str:
        return str(self.get("precision"))

    @property
    def strategy(self) -> str:
        return str(self.get("strategy"))


@dataclass(frozen=True)
class Kernels(Checked):
    name: str
    sizes: list[list[int]]


@dataclass(frozen=True)
class SqueezeExcitation(Checked):
    name: str
    enabled: bool
    reduction: int = setting(COUNT)


@dataclass(frozen=True)
class Regularizer(Checked):
    name: str
    kind: str
    rate: float = setting(PROBABILITY)


@dataclass(frozen=True)
class FusionSettings:
    """The ablation switches of the time-frequency fusion block (model/kernels, se,
    regularizer), which model.net reads by interpolation."""

    kernels: Kernels
    se: SqueezeExcitation
    regularizer: Regularizer


@dataclass(frozen=True)
class NetworkSettings(Checked):
    """`model.net`: a registered network's arguments (ser.models.registry checks them all)."""

    node: Node
    RULES: ClassVar[dict[str, Number]] = {
        "filters": COUNT, "num_blocks": COUNT, "block_dropout": PROBABILITY,
        "branch_rate": PROBABILITY, "se_reduction": COUNT,
    }

    def check(self) -> None:
        check_given(self.node, self.RULES)

    @property
    def implementation(self) -> str | None:
        """`model.net.implementation` as given: auto, reference, fast, or None (no such argument)."""
        value = self.node.get("implementation")
        return None if value is None else str(value)


@dataclass(frozen=True)
class OptimizerSettings(Checked):
    """`model.optimizer`: the `_partial_` optimiser factory's arguments."""

    node: Node
    RULES: ClassVar[dict[str, Number]] = {
        "lr": POSITIVE, "eps": POSITIVE, "betas": Number(low=0, high=1, high_open=True, items=2),
        "weight_decay": Number(low=0),
    }

    def check(self) -> None:
        check_given(self.node, self.RULES)


@dataclass(frozen=True)
class ModelSettings(Checked):
    """`model`: the LightningModule's config (ser.training.module.EmotionClassifier), with
    its network and optimiser; `node` is what Hydra builds it from."""

    node: Node
    net: NetworkSettings
    optimizer: OptimizerSettings | None
    RULES: ClassVar[dict[str, Number]] = {"label_smoothing": PROBABILITY}

    def check(self) -> None:
        check_given(self.node, self.RULES)

    @property
    def compile(self) -> str | None:
        """`model.compile`: a torch.compile mode, or None (eager)."""
        value = self.node.get("compile")
        return None if value is None else str(value)

    @property
    def has_scheduler(self) -> bool:
        return self.node.get("scheduler") is not None


@dataclass(frozen=True)
class CallbacksSettings(Checked):
    """`callbacks`: name -> callback config (null entries left out); `checkpoint` writes
    each fold's last.ckpt."""

    nodes: dict[str, Node] = field(default_factory=dict)
    EARLY_STOPPING_RULES: ClassVar[dict[str, Number]] = {"patience": NON_NEGATIVE_COUNT, "min_delta": Number(low=0)}

    def check(self) -> None:
        for name, node in self.nodes.items():
            if not isinstance(node, Mapping):
                raise ConfigError(f"callbacks.{name} must be a callback config with a _target_, got {node!r}")
        if self.early_stopping is not None:
            try:
                check_given(self.early_stopping, self.EARLY_STOPPING_RULES)
            except SettingError as error:
                raise error.within("early_stopping") from None

    @property
    def checkpoint(self) -> Node | None:
        return self.nodes.get("checkpoint")

    @property
    def early_stopping(self) -> Node | None:
        return self.nodes.get("early_stopping")

    def monitors(self) -> list[tuple[str, str]]:
        """The callbacks that watch a validation metric: (name, metric)."""
        return [
            (name, str(node.get("monitor"))) for name, node in self.nodes.items()
            if str(node.get("monitor") or "").startswith("val/")
        ]


WANDB_TARGET_SUFFIX = "WandbLogger"


@dataclass(frozen=True)
class LoggerSettings(Checked):
    """`logger`: logger name -> logger config (ser/conf/logger/*.yaml, composed:
    logger=[wandb,csv]); empty for logger=none."""

    nodes: dict[str, Node] = field(default_factory=dict)

    def check(self) -> None:
        for name, node in self.nodes.items():
            if not isinstance(node, Mapping) or "_target_" not in node:
                raise ConfigError(
                    f"logger.{name} must be a logger config with a _target_, got {node!r} (choose "
                    f"loggers with logger=wandb, logger=csv or logger=[wandb,csv]; W&B's settings are "
                    f"logger.wandb.*, e.g. logger.wandb.mode=online)"
                )

    @staticmethod
    def is_wandb(node: Mapping[str, Any]) -> bool:
        return str(node.get("_target_", "")).endswith(WANDB_TARGET_SUFFIX)

    @property
    def wandb(self) -> Node | None:
        """The W&B logger's config, if W&B is one of the loggers."""
        return next((node for node in self.nodes.values() if self.is_wandb(node)), None)


@dataclass(frozen=True)
class CrossCorpusSettings(Checked):
    """`cross_corpus` (task=cross_corpus): the shared classes, the class map, the repeats."""

    classes: list[str] | None
    class_map: dict[str, dict[str, str]]
    repeats: int = setting(COUNT)
