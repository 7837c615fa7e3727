"""Typed settings: each config group's dataclass, its ranges, and the run's typed form.

- ser.settings.rules: what a setting may hold (`Number`), the `SettingError` naming it,
  and `Checked`, the dataclass base that checks its fields when built;
- ser.settings.data: the schemas of `dataset`, `features` and `cv`, registered with
  Hydra's ConfigStore and named by every option of those groups;
- ser.settings.groups: the `_target_` groups (`trainer`, `model`, `callbacks`, `logger`),
  the model's ablation switches (`fusion`) and `cross_corpus`;
- ser.settings.run: `Settings`, the whole run typed, built once by the engine
  (`settings_from_config`) and passed below it instead of the DictConfig.
"""

from __future__ import annotations

from ser.errors import ConfigError
from ser.settings.data import register_schemas
from ser.settings.rules import SettingError, usable_cores
from ser.settings.run import Settings, check_resolves, dataset_settings, settings_from_config

__all__ = [
    "ConfigError", "SettingError", "Settings", "check_resolves", "dataset_settings", "register_schemas",
    "settings_from_config", "usable_cores",
]
