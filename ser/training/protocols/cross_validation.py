"""`task=cross_validation` (the default): the folds of one corpus (`dataset`, `cv`).

Each fold trains a fresh model on its training rows and tests the weights `cv.select`
picks (by default the last epoch's) on its test rows; nothing is selected on the test
fold. `folds/fold_KK.json` holds each finished fold. `cv.only_folds` makes a job run some
folds only: jobs of one experiment share the output directory, and the one that finds
every fold finished gathers results.json (ser.training.gather, docs/scaling.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ser.data.datamodule import FoldDataModule
from ser.settings import Settings
from ser.settings.data import CVSettings
from ser.tracking import provenance, results
from ser.training import folds
from ser.training.build import build_datamodule
from ser.training.protocols.base import ExperimentProtocol, Unit
from ser.training.selection import protocol_record


def build_folds(cv: CVSettings, datamodule: FoldDataModule) -> list[folds.Fold]:
    """The (training rows, test rows) of each fold of `cv` over the DataModule's manifest."""
    manifest = datamodule.manifest
    assert manifest is not None
    utterances = manifest.utterances
    if cv.strategy == "predefined":  # the one fold the rows' split column fixes
        return [folds.predefined_split([u.split for u in utterances], [u.origin for u in utterances], manifest.corpus)]
    splits = folds.make_folds(
        cv.strategy, len(manifest), cv.folds, cv.split_seed(datamodule.corpus.split_seed),
        speakers=manifest.speakers, sessions=[u.session for u in utterances], group_by=cv.group_by,
    )
    if cv.strategy == "kfold" and datamodule.corpus.refuses_small_classes and cv.folds is not None:
        folds.check_class_sizes(manifest, cv.folds)
    return splits


class CrossValidation(ExperimentProtocol):
    """The folds of `cv` over `dataset`; results.json lists them under `folds`."""

    results_key = results.FOLDS_DIR
    index_key = "fold"
    gatherable = True

    @property
    def only_units(self) -> Any:
        return self.settings.cv.only_folds

    def setup_name(self) -> str:
        """`<corpus>-<variant>-<features>`."""
        settings = self.settings
        return f"{settings.dataset.corpus}-{settings.variant}-{settings.features.kind}"

    def prepare(self) -> FoldDataModule:
        self.datamodule = build_datamodule(self.settings)
        return self.datamodule

    def units(self) -> list[Unit]:
        self.folds = build_folds(self.settings.cv, self.datamodule)
        return [Unit(fold, train, test) for fold, (train, test) in enumerate(self.folds)]

    def unit_path(self, output_dir: Path, index: int) -> Path:
        return results.fold_path(output_dir, index)

    def record(self) -> dict[str, Any]:
        settings, datamodule = self.settings, self.datamodule
        cv = settings.cv
        assert datamodule.manifest is not None
        return {
            # The setup without the corpus, and the Hydra choices/overrides that made it:
            # how `sweep.py report` tells the variants of a sweep apart.
            "variant": f"{settings.variant}-{settings.features.kind}",
            "hydra": provenance.hydra_job_info(),
            "corpus": datamodule.corpus.name,
            "class_names": datamodule.class_names,
            "num_utterances": len(datamodule.manifest),
            "class_counts": datamodule.manifest.class_counts(),
            "seeds": {"training": settings.seed, "split": cv.split_seed(datamodule.corpus.split_seed)},
            "cv": {"strategy": cv.strategy, "folds": len(self.folds)} | protocol_record(cv),
            "skipped_files": datamodule.skipped_files,
        }


def experiment_name(settings: Settings) -> str:
    """The name of a cross-validation setup: corpus, model variant and features (W&B group)."""
    return CrossValidation(settings).experiment_name()
