"""Every config group option composes into its typed settings (ser.settings), and a value
of the wrong type or out of its range is refused with a ConfigError naming the key.

The options are found by listing ser/conf, so a new option (or group) is tested as soon
as it is added; a new group folder must be given its typed form in TYPED_FORM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import MISSING, OmegaConf, open_dict

from ser.cli import hydra_errors_in_one_line
from ser.settings import ConfigError, SettingError, Settings
from ser.settings.data import SCHEMAS, CVSettings, DatasetSettings, FeatureRecipe
from ser.settings.groups import (
    CallbacksSettings,
    FusionSettings,
    LoggerSettings,
    ModelSettings,
    OptimizerSettings,
    TrainerSettings,
)
from tests.helpers.config import CONF, compose_config, typed_config
from tests.helpers.config import typed as typed_settings

# What an option needs beside itself to make a run (a corpus for experiment=paper, the
# file of a dataset read from one).
NEEDS: dict[str, list[str]] = {
    "dataset=folder": ["dataset.root=/data/mine"],
    "dataset=manifest": ["dataset.path=/data/mine.csv"],
    "dataset=timnet_npy": ["dataset.path=/data/EMODB.npy", "dataset.corpus=emodb"],
    "experiment=paper": ["dataset=emodb"],
    "task=cross_corpus": ["+dataset@test_dataset=synthetic"],
}
# Groups chosen with `+` (not in train.yaml's defaults list).
APPENDED = ("sweep", "parallel")
# Hydra's own configs (launcher, job logging): Hydra types them.
HYDRA_GROUPS = ("hydra",)


def typed_of(kind: type, pick: Callable[[Settings], Any]) -> Callable[[Settings], Any]:
    def check(settings: Settings) -> Any:
        value = pick(settings)
        assert isinstance(value, kind), f"{type(value).__name__} is not {kind.__name__}"
        return value

    return check


# group -> the typed object its option becomes. Option bundles that set other groups
# (experiment, debug, sweep, parallel, trainer/epochs) and paths (read by the engine and
# the interpolations) are checked as the whole run's settings.
TYPED_FORM: dict[str, Callable[[Settings], Any]] = {
    "dataset": typed_of(DatasetSettings, lambda s: s.dataset),
    "features": typed_of(FeatureRecipe, lambda s: s.features),
    "cv": typed_of(CVSettings, lambda s: s.cv),
    "trainer": typed_of(TrainerSettings, lambda s: s.trainer),
    "model": typed_of(ModelSettings, lambda s: s.model),
    "model/kernels": typed_of(FusionSettings, lambda s: s.fusion),
    "model/se": typed_of(FusionSettings, lambda s: s.fusion),
    "model/regularizer": typed_of(FusionSettings, lambda s: s.fusion),
    "model/optimizer": typed_of(OptimizerSettings, lambda s: s.model.optimizer),
    "callbacks": typed_of(CallbacksSettings, lambda s: s.callbacks),
    "logger": typed_of(LoggerSettings, lambda s: s.logger),
    "task": typed_of(str, lambda s: s.task),
    **{group: typed_of(Settings, lambda s: s) for group in (
        "experiment", "debug", "sweep", "parallel", "paths", "trainer/epochs",
    )},
}


def groups() -> list[str]:
    """Every config group folder under ser/conf (nested ones as model/se), Hydra's aside."""
    found = {
        path.parent.relative_to(CONF).as_posix() for path in CONF.rglob("*.yaml") if path.parent != CONF
    }
    return sorted(g for g in found if g.split("/")[0] not in HYDRA_GROUPS)


def options() -> list[tuple[str, str]]:
    return [(group, path.stem) for group in groups() for path in sorted((CONF / group).glob("*.yaml"))]


def test_every_group_has_a_typed_form() -> None:
    assert set(groups()) == set(TYPED_FORM), "a config group without a typed form in TYPED_FORM"


@pytest.mark.parametrize(("group", "option"), options(), ids=lambda value: str(value))
def test_every_option_composes_into_its_typed_form(group: str, option: str) -> None:
    choice = f"{'+' if group in APPENDED else ''}{group}={option}"
    overrides = [choice, *NEEDS.get(f"{group}={option}", [])]
    if group == "sweep" and option == "hpo":
        overrides.append("hydra.sweeper.n_trials=1")
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "unused-output-dir"  # ${hydra:...} outside a Hydra run
    typed = TYPED_FORM[group](typed_settings(cfg))
    if group in ("dataset", "features", "cv"):  # the schema the option names is its type
        assert type(typed) is OmegaConf.get_type(cfg[group])
        assert dataclasses.asdict(typed) == OmegaConf.to_container(cfg[group], resolve=True)
    if group in ("trainer", "model"):  # what Hydra builds from, resolved
        assert typed.node == OmegaConf.to_container(cfg[group], resolve=True)


def test_the_schemas_hold_no_values_the_yaml_files_give() -> None:
    # Each default lives in one place: an option's YAML file. A schema field only types it.
    for (group, name), schema in SCHEMAS.items():
        defaults = {f.name: f.default for f in dataclasses.fields(schema)}
        assert all(value == MISSING for value in defaults.values()), (group, name, defaults)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cv.validation=1.5"], "cv.validation=1.5: expected a number > 0 and < 1, or null"),
        (["cv=speaker", "cv.folds=1"], "cv.folds=1: expected a whole number >= 2, or null"),
        (["features.n_fft=0"], "features.n_fft=0: expected a whole number >= 1"),
        (["features=ssl", "features.batch_size=0"], "features.batch_size=0: expected a whole number >= 1"),
        (["dataset=manifest", "dataset.path=x.csv", "dataset.batch_size=0"],
         "dataset.batch_size=0: expected a whole number >= 1"),
        (["task=cross_corpus", "+dataset@test_dataset=synthetic", "test_dataset.signal_length=0"],
         "test_dataset.signal_length=0: expected a whole number >= 1, or null"),
        (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0: expected a whole number >= 1"),
        (["model.net.block_dropout=1.0"], "model.net.block_dropout=1.0: expected a number >= 0 and < 1"),
        (["model.optimizer.eps=-1"], "model.optimizer.eps=-1: expected a number > 0"),
        (["fusion.se.reduction=0"], "fusion.se.reduction=0: expected a whole number >= 1"),
        (["callbacks=early_stopping", "callbacks.early_stopping.min_delta=-0.5"],
         "callbacks.early_stopping.min_delta=-0.5: expected a number >= 0"),
        (["task=cross_corpus", "+dataset@test_dataset=synthetic", "cross_corpus.repeats=0"],
         "cross_corpus.repeats=0: expected a whole number >= 1"),
        (["progress=maybe"], "progress=maybe: expected true or false"),
        (["plots.embeddings=1"], "plots.embeddings=1: expected true or false"),
        (["seed=-3"], "seed=-3: expected a whole number in 0..2147483647"),
        (["+dataset.colour=blue"], "dataset.colour is not a setting of dataset"),
    ],
)
def test_a_value_out_of_range_names_its_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        typed_config(overrides)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cv.folds=abc", "cv.folds=abc: expected a whole number >= 2, or null"),
        ("cv.seed=1.5", "cv.seed=1.5: expected a whole number in 0..2147483647, or null"),
        ("features.hop_length=half", "features.hop_length=half: expected a whole number >= 1"),
        ("dataset.batch_size=[1,2]", "dataset.batch_size=[1, 2]: expected a whole number >= 1"),
        ("dataset.check_counts=maybe", "Error merging override dataset.check_counts=maybe"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_as_the_config_is_composed(
    override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the commands compose their config (ser.commands): one line naming the key, exit 2.
    with pytest.raises(SystemExit) as ended, hydra_errors_in_one_line():
        compose_config([override])
    assert ended.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_a_group_dataclass_built_by_hand_is_checked_too() -> None:
    values = {"strategy": "kfold", "folds": 10, "seed": None, "validation": 0.1, "select": "last",
              "only_folds": None, "stack": "auto", "workers": "auto"}
    assert CVSettings(**values).split_seed(46) == 46
    with pytest.raises(SettingError, match=r"^workers=0: expected auto or a whole number >= 1$"):
        CVSettings(**{**values, "workers": 0})
    with pytest.raises(SettingError, match=r"^validation=1.5: expected a number > 0 and < 1, or null$"):
        CVSettings(**{**values, "validation": 1.5})
    with pytest.raises(ConfigError, match=r"^cv.select must be one of"):
        CVSettings(**{**values, "select": "best"})


def test_a_dataset_config_without_a_schema_is_refused_by_name(tmp_path: Path) -> None:
    from ser.settings import settings_from_config

    cfg = compose_config([])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.dataset = OmegaConf.create({"_target_": "x.Y", "corpus": "mine"})
    with pytest.raises(ConfigError, match=r"^dataset is not a dataset config of this project"):
        settings_from_config(cfg)
