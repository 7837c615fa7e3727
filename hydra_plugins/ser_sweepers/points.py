"""`hydra/sweeper=points`: a sweep over a list of named points.

Hydra's sweepers run the product of their parameters, but an ablation table is a union:
the baseline and one change at a time (ser/conf/sweep/ablation.yaml). No sweeper Hydra
ships can express it, so this one lists the points, each a name and the overrides that
make it, and runs every point crossed with the product of `params` and the command
line's sweeps (`seed=1,2,3`), in one multirun on whichever launcher is chosen. Each job
gets `+<label>=<name>` as well, so its config says which point it is and the sweep
report labels the rows by the names (ser.sweeps.report.collect).

Built on Hydra's public plugin interface (`hydra.plugins.sweeper.Sweeper`), as Hydra's
own sweeper plugins (Optuna, Ax, Nevergrad) are.
"""

# No `from __future__ import annotations`: Hydra's plugin discovery runs this module
# before it is in sys.modules, where dataclasses would have to look string annotations up.
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ser.errors import ConfigError


@dataclass
class PointsSweeperConf:
    _target_: str = "hydra_plugins.ser_sweepers.points.PointsSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    # Point name -> the overrides that make it ([]: the configuration as composed).
    points: dict[str, list[str]] = field(default_factory=dict)
    # The config key each job's point name is added under.
    label: str = "point"


ConfigStore.instance().store(group="hydra/sweeper", name="points", node=PointsSweeperConf, provider="ser")


def product_of(overrides: list[Override]) -> list[list[str]]:
    """Each job's overrides: the product of the sweeps (`a=1,2`, `range`, `glob`), one value
    per key, keys in the order given (a key given twice: its first place, its last values)."""
    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise HydraException(f"the points sweeper cannot sweep {override.input_line} (not a list of values)")
    return [list(job) for job in itertools.product(*choices.values())]


class PointsSweeper(Sweeper):
    """Every job of the product of the sweeps, once for each named point."""

    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        points: dict[str, list[str]] | None = None,
        label: str = "point",
    ) -> None:
        super().__init__()
        if not points:
            raise ConfigError("hydra.sweeper.points is empty: name at least one point")
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.points = {str(name): [str(o) for o in overrides or ()] for name, overrides in points.items()}
        self.label = str(label)
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """Batches of job overrides: each job of the product, per point.

        A point's overrides come last, so they win over the same setting given for every
        job (`model.net.num_blocks=4` leaves the `tabs_6` point at 6).
        """
        jobs = product_of(overrides)
        crossed = [
            [*job, f"+{self.label}={name}", *point] for name, point in self.points.items() for job in jobs
        ]
        size = max_batch_size if max_batch_size and max_batch_size > 0 else len(crossed)
        return [crossed[start : start + size] for start in range(0, len(crossed), size)]

    def sweep(self, arguments: list[str]) -> Any:
        """Launch every batch; Hydra's record of the sweep goes to `<sweep dir>/multirun.yaml`."""
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, first_job = [], 0
        for batch in self.split_arguments(overrides, self.max_batch_size):
            self.validate_batch_is_legal(batch)  # a composition error stops before any job runs
            results = self.launcher.launch(batch, initial_job_idx=first_job)
            for result in results:
                _ = result.return_value  # raises the job's error, as Hydra's basic sweeper does
            first_job += len(batch)
            returns.append(results)
        return returns
