"""Two corpora as one DataModule, over the classes they share (cross-corpus evaluation).

The model's classes are the shared ones, in the configured order, and a corpus's class
names reach them through a class map (per corpus: its name -> the shared name; the
parsers already use one vocabulary, so by default every name maps to itself). Source
rows of the shared classes come first, then the target's, labelled by shared class: the
cross-corpus protocol (ser.training.protocols.cross_corpus) trains on the first block
and tests on the second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ser.data.datamodule import FoldDataModule
from ser.data.manifest import Manifest
from ser.settings import ConfigError


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
        self.source, self.target = source, target
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

    def identity_parts(self) -> list[Any]:
        """Both corpora's data, and which of their rows this experiment takes."""
        return [self.source.data_identity(), self.target.data_identity(), self.source_rows.tolist(),
                self.target_rows.tolist(), self.shared]

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
