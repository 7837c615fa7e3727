"""`task=cross_corpus`: train on one corpus, test on another, over the classes both have.

`python train.py task=cross_corpus dataset=emodb +dataset@test_dataset=ravdess` trains on
every source utterance (`dataset`) of a class in `cross_corpus.classes` (reached through
`cross_corpus.class_map`, ser.data.cross_corpus) and tests on every such target
utterance, cut to the source's signal length; no folds, as no target utterance is ever
trained on. Each of `cross_corpus.repeats` trainings (seeds seed, seed+1, ...) is a unit
of the engine like a fold (validation and selection from the source, resume, W&B run,
`runs/run_KK.json`); results.json holds the target's confusion matrix over the shared
classes, UAR and WAR per run, and their mean and std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ser.data.cross_corpus import CrossCorpusDataModule, shared_classes
from ser.data.datamodule import FoldDataModule
from ser.errors import ConfigError
from ser.settings import Settings
from ser.settings.data import DatasetSettings
from ser.training.build import build_datamodule, instantiate_datamodule
from ser.training.protocols.base import ExperimentProtocol, Unit
from ser.training.selection import protocol_record

RUNS_DIR = "runs"


def run_path(output_dir: Path, repeat: int) -> Path:
    """`runs/run_KK.json` of an output directory."""
    return Path(output_dir) / RUNS_DIR / f"run_{repeat:02d}.json"


def build_target_datamodule(target: DatasetSettings, source: FoldDataModule, progress: bool) -> FoldDataModule:
    """The `test_dataset` DataModule, its audio cut to the source's signal length.

    The target is a dataset config as it is (`+dataset@test_dataset=NAME`), so it may
    carry a length of its own (the synthetic corpus's); the model's input shape wins.
    """
    length = int(source.feature_settings.signal_length)
    own = target.signal_length
    if own is not None and own != length:
        print(
            f"[ser] test_dataset.signal_length={own} is not used: the target is cut to the "
            f"{length} samples the model trains on ({source.corpus.name})", flush=True,
        )
    return instantiate_datamodule(target, "test", progress=progress, signal_length=length)


def corpus_record(datamodule: FoldDataModule, rows: np.ndarray, labels: np.ndarray, shared: list[str]) -> dict:
    """What results.json says about the source or the target corpus."""
    counts = np.bincount(labels, minlength=len(shared))
    return {
        "corpus": datamodule.corpus.name,
        "class_names": datamodule.class_names,
        "num_utterances": int(len(rows)),
        "class_counts": {name: int(n) for name, n in zip(shared, counts, strict=True)},
        "skipped_files": datamodule.skipped_files,
    }


class CrossCorpus(ExperimentProtocol):
    """`cross_corpus.repeats` trainings on the source, each tested on the whole target."""

    results_key = RUNS_DIR
    index_key = "repeat"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if settings.test_dataset is None:
            raise ConfigError(
                "task=cross_corpus needs the corpus to test on: add +dataset@test_dataset=NAME "
                "(e.g. +dataset@test_dataset=ravdess test_dataset.root=PATH)"
            )
        if settings.cross_corpus is None:
            raise ConfigError("task=cross_corpus needs its `cross_corpus` settings (ser/conf/task/cross_corpus.yaml)")
        self.target_settings = settings.test_dataset
        self.repeats = settings.cross_corpus.repeats
        self.class_map = settings.cross_corpus.class_map or {}
        wanted = settings.cross_corpus.classes
        self.wanted = None if wanted is None else [str(c) for c in wanted]

    def setup_name(self) -> str:
        """`<source>-to-<target>-<variant>-<features>`."""
        settings = self.settings
        return (
            f"{settings.dataset.corpus}-to-{self.target_settings.corpus}-{settings.variant}-"
            f"{settings.features.kind}"
        )

    def prepare(self) -> FoldDataModule:
        self.source = build_datamodule(self.settings)
        self.target = build_target_datamodule(self.target_settings, self.source, self.settings.progress)
        self.shared = shared_classes(
            self.source.corpus.name, self.source.class_names, self.target.corpus.name,
            self.target.class_names, self.wanted, self.class_map,
        )
        self.data = CrossCorpusDataModule(self.source, self.target, self.shared, self.class_map)
        return self.data

    def units(self) -> list[Unit]:
        # Run r is unit r: seed + r, checkpoints/fold_rr, as a fold would be.
        return [Unit(repeat, self.data.train_block, self.data.test_block) for repeat in range(self.repeats)]

    def unit_path(self, output_dir: Path, index: int) -> Path:
        return run_path(output_dir, index)

    def announce(self, unit: Unit, total: int) -> str:
        data = self.data
        return (
            f"run {unit.index + 1}/{total}, {data.num_source} {data.source_name} -> "
            f"{len(data.target_rows)} {data.target_name} utterances"
        )

    def relabel(self, result: dict[str, Any]) -> dict[str, Any]:
        result["repeat"] = result.pop("fold")
        result["test_rows"] = self.data.corpus_rows(result["test_rows"])  # rows of the target's manifest
        if "validation_rows" in result:
            result["validation_rows"] = self.data.corpus_rows(result["validation_rows"])  # the source's
        return result

    def record(self) -> dict[str, Any]:
        data, labels = self.data, self.data.targets.numpy()
        return {
            "task": "cross_corpus",
            "class_names": self.shared,
            "class_map": self.class_map,
            "source": corpus_record(self.source, data.source_rows, labels[: data.num_source], self.shared),
            "target": corpus_record(self.target, data.target_rows, labels[data.num_source :], self.shared),
            "signal_length": int(self.source.feature_settings.signal_length),
            "seeds": {"training": self.settings.seed, "split": self.settings.cv.split_seed(self.source.corpus.split_seed)},
            "cv": protocol_record(self.settings.cv),
        }
