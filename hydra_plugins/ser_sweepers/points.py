"""`hydra/sweeper=points`: Hydra's basic sweeper over a list of named points.

Hydra's sweepers run the product of their parameters, but an ablation table is a union:
the baseline and one change at a time (ser/conf/sweep/ablation.yaml). No sweeper Hydra
ships can express it, so this one lists the points, each a name and the overrides that
make it, and runs every point crossed with the product of `params` and the command
line's sweeps (`seed=1,2,3`), in one multirun on whichever launcher is chosen. Each job
gets `+<label>=<name>` as well, so its config says which point it is and the sweep
report labels the rows by the names (ser.sweeps.report.collect).
"""

# No `from __future__ import annotations`: Hydra's plugin discovery runs this module
# before it is in sys.modules, where dataclasses would have to look string annotations up.
from dataclasses import dataclass, field

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override

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


class PointsSweeper(BasicSweeper):
    """The basic sweeper's jobs, once for each named point."""

    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        points: dict[str, list[str]] | None = None,
        label: str = "point",
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        if not points:
            raise ConfigError("hydra.sweeper.points is empty: name at least one point")
        self.points = {str(name): [str(o) for o in overrides or ()] for name, overrides in points.items()}
        self.label = str(label)

    def split_arguments(  # type: ignore[override]  # the basic sweeper's is a staticmethod
        self, overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """Batches of job overrides: each job of the basic sweeper's product, per point.

        A point's overrides come last, so they win over the same setting given for every
        job (`model.net.num_blocks=4` leaves the `tabs_6` point at 6).
        """
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        crossed = [
            [*job, f"+{self.label}={name}", *point] for name, point in self.points.items() for job in jobs
        ]
        size = max_batch_size if max_batch_size and max_batch_size > 0 else len(crossed)
        return [crossed[start : start + size] for start in range(0, len(crossed), size)]
