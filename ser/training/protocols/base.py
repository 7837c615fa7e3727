"""What a protocol is: the part of an experiment that the engine does not own.

A protocol is chosen by the `_target_` of its task config (ser/conf/task/*.yaml) and
built with the run's typed settings (ser.settings.Settings). It says only:

- its data: `prepare()` builds its DataModule(s) and returns the one every unit uses;
- its units: `units()`, the trainings of the experiment with their training and test
  rows (the folds of cross-validation, the repeats of cross-corpus evaluation);
- how a unit's result is recorded: `relabel()`, and the file it goes to (`unit_path`);
- its own results.json fields: `record()`.

The engine (ser.training.engine) owns everything else, the same for every protocol:
settings checks, the output directory's guard and locks, the record header, skipping
finished units, atomic writes, results.json, the objective and the summary W&B run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ser.data.datamodule import FoldDataModule
from ser.settings import Settings


@dataclass(frozen=True)
class Unit:
    """One training of an experiment: its number, training rows and test rows."""

    index: int
    train_rows: np.ndarray
    test_rows: np.ndarray


class ExperimentProtocol(ABC):
    """An experiment's data, units, labels and record fields (see the module doc)."""

    # The key results.json lists the units' results under ("folds", "runs").
    results_key: ClassVar[str]
    # The key of a unit's number in its result ("fold", "repeat"); also its name in messages.
    index_key: ClassVar[str]
    # Whether units may run as separate jobs that share the output directory
    # (`only_units`): the engine then writes folds/experiment.json first and gathers
    # results.json when every unit has finished (ser.training.gather).
    gatherable: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        """Check the protocol's own settings; nothing is built or written yet."""
        self.settings = settings

    @property
    def only_units(self) -> Any:
        """The units this job runs, as `cv.only_folds` names them; None: every unit."""
        return None

    def experiment_name(self) -> str:
        """`experiment_name`, or the protocol's name of the setup (the W&B group)."""
        return self.settings.experiment_name or self.setup_name()

    @abstractmethod
    def setup_name(self) -> str:
        """The setup's name without an explicit `experiment_name`."""

    @abstractmethod
    def prepare(self) -> FoldDataModule:
        """Build the data; return the DataModule every unit trains and tests on."""

    @abstractmethod
    def units(self) -> list[Unit]:
        """The units of the experiment, in order (after `prepare`)."""

    @abstractmethod
    def unit_path(self, output_dir: Path, index: int) -> Path:
        """The file that holds unit `index`'s result once it has finished."""

    @abstractmethod
    def record(self) -> dict[str, Any]:
        """The protocol's fields of results.json (after `units`)."""

    def announce(self, unit: Unit, total: int) -> str:
        """The progress line printed before a unit trains."""
        return f"{self.index_key} {unit.index + 1}/{total}"

    def announce_together(self, units: list[Unit], total: int) -> str:
        """The progress line printed before units train together (`cv.stack`)."""
        numbers = ", ".join(str(unit.index + 1) for unit in units)
        return f"{self.index_key}s {numbers} of {total} together"

    def relabel(self, result: dict[str, Any]) -> dict[str, Any]:
        """A unit's result (as ser.training.fold.run_fold reports it) as it is recorded."""
        return result
