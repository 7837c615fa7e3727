"""Cross-corpus evaluation: train on one corpus, test on another, over the classes both have.

`python train.py task=cross_corpus dataset=emodb test_dataset=ravdess` trains on every
utterance of the source corpus (`dataset`) whose class is one of `cross_corpus.classes`
and tests on every such utterance of the target corpus (`test_dataset`): the common
protocol, with no folds, since no target utterance is ever seen in training. The model's
classes are the shared ones, in the configured order, and a corpus's class names reach
them through `cross_corpus.class_map` (explicit in config; the parsers already use one
vocabulary, so by default every name maps to itself). The target's audio is cut to the
source's signal length, so the model sees inputs of the shape it was trained on.

Each of `cross_corpus.repeats` trainings (seeds seed, seed+1, ...) is one run of the
fold machinery of ser.training (`run_fold`): validation split and checkpoint selection
(`cv.validation`, `cv.select`, carved from the source), resume from `last.ckpt`, and
the W&B run. `runs/run_KK.json` holds each finished run, so a restarted run skips it;
`results.json` holds the target's confusion matrix over the shared classes, UAR and WAR
per run, and mean +- std.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ser import distributed
from ser.data.datamodule import FoldDataModule
from ser.data.manifest import Manifest
from ser.tracking import provenance, results, wandb_runs
from ser.tracking.output_dir import claim_output_dir
from ser.training import (
    DATASET_PROTOCOL_KEYS,
    ConfigError,
    build_datamodule,
    config_hash,
    defining_config,
    objective_value,
    output_directory,
    protocol_record,
    run_fold,
    split_seed,
)

RUNS_DIR = "runs"


def run_path(output_dir: Path, repeat: int) -> Path:
    return Path(output_dir) / RUNS_DIR / f"run_{repeat:02d}.json"


def check_class_map(corpus: str, class_names: Sequence[str], class_map: Mapping[str, str]) -> None:
    """A class map may only rename classes the corpus has (catches typos)."""
    unknown = sorted(set(class_map) - set(class_names))
    if unknown:
        raise ConfigError(
            f"cross_corpus.class_map.{corpus} renames {unknown}, which {corpus} does not "
            f"have; its classes are {list(class_names)}"
        )


def shared_classes(
    source: str,
    source_classes: Sequence[str],
    target: str,
    target_classes: Sequence[str],
    wanted: Sequence[str] | None,
    class_map: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """The classes trained and scored: `wanted`, checked against both corpora after
    `class_map`, or (None) every mapped class both have, in the source's order."""
    class_map = class_map or {}
    source_map, target_map = class_map.get(source, {}), class_map.get(target, {})
    check_class_map(source, source_classes, source_map)
    check_class_map(target, target_classes, target_map)
    mapped_source = list(dict.fromkeys(source_map.get(c, c) for c in source_classes))
    mapped_target = set(target_map.get(c, c) for c in target_classes)
    if wanted is None:
        shared = [c for c in mapped_source if c in mapped_target]
    else:
        shared = list(wanted)
        if len(set(shared)) != len(shared):
            raise ConfigError(f"cross_corpus.classes names a class twice: {shared}")
        for corpus, have in ((source, set(mapped_source)), (target, mapped_target)):
            missing = [c for c in shared if c not in have]
            if missing:
                raise ConfigError(
                    f"cross_corpus.classes {missing} not in {corpus} (its classes after "
                    f"cross_corpus.class_map: {sorted(have)}); drop them or map a class onto them"
                )
    if len(shared) < 2:
        raise ConfigError(
            f"{source} and {target} share {len(shared)} class(es) ({shared}); cross-corpus "
            f"evaluation needs at least 2 (see cross_corpus.classes and cross_corpus.class_map)"
        )
    return shared


def shared_rows(
    datamodule: FoldDataModule, shared: Sequence[str], class_map: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """(manifest rows whose mapped class is shared, their shared class indices)."""
    assert datamodule.targets is not None
    index = {name: i for i, name in enumerate(shared)}
    to_shared = np.array(
        [index.get(class_map.get(name, name), -1) for name in datamodule.class_names], dtype=np.int64
    )
    labels = to_shared[datamodule.targets.numpy()]
    rows = np.flatnonzero(labels >= 0)
    return rows, labels[rows]


class CrossCorpusDataModule(FoldDataModule):
    """Source rows of the shared classes, then target rows, labelled by shared class.

    Row r < `num_source` is source manifest row `source_rows[r]`; the rest are target
    manifest rows `target_rows[r - num_source]`. The driver trains on the first block
    and tests on the second.
    """

    def __init__(
        self,
        source: FoldDataModule,
        target: FoldDataModule,
        classes: Sequence[str],
        class_map: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(
            corpus=source.corpus.name, batch_size=source.batch_size, num_workers=source.num_workers
        )
        class_map = class_map or {}
        self.shared = list(classes)
        self.source_name, self.target_name = source.corpus.name, target.corpus.name
        self.feature_settings = source.feature_settings
        assert source.features is not None and target.features is not None
        if source.features.shape[1:] != target.features.shape[1:]:
            raise ConfigError(
                f"{self.source_name} features have shape {tuple(source.features.shape[1:])} per "
                f"utterance but {self.target_name}'s {tuple(target.features.shape[1:])}; the two "
                f"corpora need the same feature settings and signal length"
            )
        self.source_rows, source_labels = shared_rows(source, self.shared, class_map.get(self.source_name, {}))
        self.target_rows, target_labels = shared_rows(target, self.shared, class_map.get(self.target_name, {}))
        for name, rows in ((self.source_name, self.source_rows), (self.target_name, self.target_rows)):
            if len(rows) == 0:
                raise ConfigError(f"{name} has no utterance of the shared classes {self.shared}")
        self.num_source = len(self.source_rows)
        self.features = torch.cat([
            source.features[torch.from_numpy(self.source_rows)],
            target.features[torch.from_numpy(self.target_rows)],
        ])
        self.targets = torch.from_numpy(np.concatenate([source_labels, target_labels]))
        self.manifest = Manifest(
            corpus=f"{self.source_name}->{self.target_name}", root="", class_names=list(self.shared),
            utterances=[
                dataclasses.replace(
                    corpus.manifest.utterances[row], label=self.shared[label],
                    speaker=f"{corpus.corpus.name}/{corpus.manifest.utterances[row].speaker}",
                )
                for corpus, rows, labels in (
                    (source, self.source_rows, source_labels), (target, self.target_rows, target_labels)
                )
                for row, label in zip(rows.tolist(), labels.tolist(), strict=True)
            ],
        )

    @property
    def class_names(self) -> list[str]:
        return list(self.shared)

    @property
    def num_classes(self) -> int:
        return len(self.shared)

    @property
    def train_block(self) -> np.ndarray:
        return np.arange(self.num_source)

    @property
    def test_block(self) -> np.ndarray:
        return np.arange(self.num_source, len(self.targets))

    def prepare_data(self) -> None:
        """Both corpora were prepared before they were combined."""

    def corpus_rows(self, rows: Sequence[int]) -> list[int]:
        """Combined rows -> rows of their own corpus's manifest."""
        return [
            int(self.source_rows[r]) if r < self.num_source else int(self.target_rows[r - self.num_source])
            for r in (int(i) for i in rows)
        ]


def build_target_datamodule(cfg: DictConfig, source: FoldDataModule) -> FoldDataModule:
    """The `test_dataset` DataModule, its audio cut to the source's signal length."""
    length = source.feature_settings.signal_length
    asked = cfg.test_dataset.get("signal_length")
    if asked is not None and int(asked) != int(length):
        raise ConfigError(
            f"test_dataset.signal_length={asked}, but the model trains on {length} samples of "
            f"{source.corpus.name}; leave test_dataset.signal_length null"
        )
    settings = {k: v for k, v in cfg.test_dataset.items() if k not in DATASET_PROTOCOL_KEYS}
    settings["signal_length"] = int(length)
    datamodule = instantiate(OmegaConf.create(settings), _recursive_=False, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def experiment_name(cfg: DictConfig) -> str:
    if cfg.get("experiment_name"):
        return str(cfg.experiment_name)
    return f"{cfg.dataset.corpus}-to-{cfg.test_dataset.corpus}-{cfg.model.variant}-{cfg.features.kind}"


def corpus_record(datamodule: FoldDataModule, rows: np.ndarray, labels: np.ndarray, shared: list[str]) -> dict:
    counts = np.bincount(labels, minlength=len(shared))
    return {
        "corpus": datamodule.corpus.name,
        "class_names": datamodule.class_names,
        "num_utterances": int(len(rows)),
        "class_counts": {name: int(n) for name, n in zip(shared, counts, strict=True)},
        "skipped_files": datamodule.skipped_files,
    }


def train_cross_corpus(cfg: DictConfig) -> float:
    """Train on `dataset`, test on `test_dataset`; return the mean of `objective` over repeats.

    As in cross-validation (ser.training.objective_value): the target's test UAR by
    default, the source's validation UAR for a search (objective=val/uar, cv.validation).
    """
    if cfg.get("test_dataset") is None:
        raise ConfigError(
            "task=cross_corpus needs the corpus to test on: add test_dataset=NAME (e.g. "
            "test_dataset=ravdess test_dataset.root=PATH)"
        )
    settings = cfg.get("cross_corpus") or {}
    repeats = int(settings.get("repeats", 1))
    if repeats < 1:
        raise ConfigError(f"cross_corpus.repeats must be at least 1, got {repeats}")
    class_map = settings.get("class_map")
    class_map = {} if class_map is None else OmegaConf.to_container(class_map, resolve=True)
    wanted = settings.get("classes")
    wanted = None if wanted is None else [str(c) for c in wanted]

    output_dir = output_directory(cfg)
    # Refused, or locked for this run, before anything is written (ser.tracking.output_dir).
    with claim_output_dir(cfg, output_dir, config_hash(cfg), writer=distributed.is_global_zero()):
        return run_repeats(cfg, output_dir, repeats, class_map, wanted)


def run_repeats(
    cfg: DictConfig, output_dir: Path, repeats: int, class_map: dict, wanted: list[str] | None
) -> float:
    """The trainings of `train_cross_corpus`, in the output directory it holds."""
    torch.set_float32_matmul_precision("high")
    this_hash = config_hash(cfg)
    results_path = output_dir / results.RESULTS_FILE
    source = build_datamodule(cfg)
    target = build_target_datamodule(cfg, source)
    shared = shared_classes(
        source.corpus.name, source.class_names, target.corpus.name, target.class_names, wanted, class_map,
    )
    data = CrossCorpusDataModule(source, target, shared, class_map)
    experiment = experiment_name(cfg)
    run_config = defining_config(cfg)
    labels = data.targets.numpy()
    record: dict[str, Any] = {
        "experiment": experiment,
        "task": "cross_corpus",
        "status": "running",
        "config_hash": this_hash,
        "class_names": shared,
        "class_map": class_map,
        "source": corpus_record(source, data.source_rows, labels[: data.num_source], shared),
        "target": corpus_record(target, data.target_rows, labels[data.num_source :], shared),
        "signal_length": int(source.feature_settings.signal_length),
        "seeds": {"training": int(cfg.seed), "split": split_seed(cfg, source)},
        "cv": protocol_record(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": provenance.package_versions(),
        "git": provenance.git_commit(),
        "machine": provenance.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": [],
    }
    writes = distributed.is_global_zero()

    finished: list[dict[str, Any]] = []
    for repeat in range(repeats):
        path = run_path(output_dir, repeat)
        if path.exists():
            saved = results.read_json(path)
            if saved.get("config_hash") == this_hash:
                finished.append(saved["result"])
                continue
        print(
            f"[ser] {experiment}: run {repeat + 1}/{repeats}, {data.num_source} "
            f"{data.source_name} -> {len(data.target_rows)} {data.target_name} utterances",
            flush=True,
        )
        # Run r is "fold" r of the fold machinery: seed + r, checkpoints/fold_rr.
        result = run_fold(
            cfg, data, repeat, data.train_block, data.test_block, output_dir, experiment, run_config
        )
        result["repeat"] = result.pop("fold")
        result["test_rows"] = data.corpus_rows(result["test_rows"])  # rows of the target's manifest
        if "validation_rows" in result:
            result["validation_rows"] = data.corpus_rows(result["validation_rows"])  # the source's
        finished.append(result)
        if writes:
            results.atomic_write_json({"config_hash": this_hash, "result": result}, path)
            record["runs"] = finished
            results.atomic_write_json(record, results_path)

    summary = results.summarise(finished)
    if not writes:
        return objective_value(cfg, summary)
    record.update(runs=finished, summary=summary, status="complete")
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.atomic_write_json(record, results_path)
    as_folds = [dict(run, fold=run["repeat"]) for run in finished]
    results.print_table(f"{experiment}  ({output_dir})", as_folds, summary)
    wandb_runs.log_summary_run(cfg.get("logger"), experiment, as_folds, summary, run_config, output_dir)
    return objective_value(cfg, summary)
