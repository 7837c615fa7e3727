"""LightningDataModules: manifest -> cached features -> per-fold loaders.

`CorpusDataModule` serves every corpus: a corpus differs only in its `Corpus` layout
(ser.data.corpora), named by `corpus:` in its dataset config (ser/conf/dataset/*.yaml);
`SyntheticDataModule` generates the default corpus first. Features are extracted once per
corpus state and feature settings (ser.data.extraction), cached under a key made of both,
and kept in memory as tensors. `FoldDataModule` is the part every data source shares (the
TIM-Net feature files use it too): tensors in memory, served fold by fold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ser.data.corpora import Corpus, CorpusError, get_corpus
from ser.data.corpora.base import CORPUS_RATE
from ser.data.corpora.labelled import COVERED_SHARE, covering_seconds
from ser.data.extraction import (
    BAD_FILE_CHOICES,
    FEATURE_BATCH_SIZE,
    FEATURE_CACHE_VERSION,
    extract_manifest,
    load_or_extract,
    resolve_feature_device,
)
from ser.data.feature_kinds import AnyFeatureSettings, feature_settings
from ser.data.manifest import Manifest
from ser.data.memory import check_features_fit
from ser.data.sampling import EpochSeededSampler
from ser.errors import ConfigError

log = logging.getLogger(__name__)

# Without a validation split `val_dataloader` returns [] on purpose; Lightning warns about it.
warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")


class FoldDataModule(pl.LightningDataModule):
    """Features and labels of one corpus in memory, served fold by fold.

    Subclasses fill `manifest`, `features` (N, frames, features) and `targets` (N,) in
    `prepare_data()`; each fold then calls `set_fold(train_indices, test_indices)`
    before each fit/test.
    """

    # Whether preparing the data shows progress (the feature extraction's bar). The run's
    # `progress` setting, not a dataset one: the engine sets it (ser.training.build).
    progress: bool = True

    def __init__(self, corpus: str | Corpus, batch_size: int = 64, num_workers: int = 0) -> None:
        super().__init__()
        # A registered layout by name, or a corpus built from its settings (a manifest).
        self.corpus: Corpus = corpus if isinstance(corpus, Corpus) else get_corpus(corpus)
        # Its range (>= 1) is the dataset settings' (ser.settings.data), checked as they are built.
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.feature_settings: AnyFeatureSettings
        self.manifest: Manifest | None = None
        self.features: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.skipped_files: list[dict[str, str]] = []
        self.train_indices: np.ndarray | None = None
        self.test_indices: np.ndarray | None = None
        self.validation_indices: np.ndarray | None = None
        self.shuffle_seed: int | None = None
        self._identity: str | None = None

    # -- what the rest of the code reads ------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.corpus.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.corpus.class_names)

    @property
    def input_dim(self) -> int:
        if self.features is not None:
            return int(self.features.shape[-1])
        return self.feature_settings.num_features

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(frames, features) of one utterance."""
        if self.features is not None:
            return int(self.features.shape[1]), int(self.features.shape[2])
        return self.feature_settings.num_frames, self.feature_settings.num_features

    def build_manifest(self) -> Manifest:
        raise NotImplementedError

    def identity_parts(self) -> list[Any]:
        """What identifies the prepared data: the manifest's rows and files (its fingerprint)."""
        if self.manifest is None:
            raise RuntimeError("call prepare_data() before asking what the data is")
        return [self.manifest.fingerprint()]

    def data_identity(self) -> str:
        """The prepared data's identity, 16 hex digits, which a resumed run must find again
        (results, fold files and checkpoints record it). Computed once, after prepare_data()."""
        if self._identity is None:
            text = json.dumps(self.identity_parts(), sort_keys=True, default=str)
            self._identity = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._identity

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()

    # -- folds --------------------------------------------------------------------------
    def set_fold(
        self,
        train_indices: Sequence[int],
        test_indices: Sequence[int],
        validation_indices: Sequence[int] | None = None,
        shuffle_seed: int | None = None,
    ) -> None:
        """Select the utterances the next fit and test use (row indices of the manifest).

        `validation_indices`: rows carved from the training fold for checkpoint selection
        or early stopping (None: no validation loop, the paper protocol). `shuffle_seed`:
        epoch e trains in an order drawn from (shuffle_seed, e) alone, so a resumed epoch
        repeats it; None takes torch's current seed (set per fold, ser.training.fold).
        """
        self.train_indices = np.asarray(train_indices, dtype=np.int64)
        self.test_indices = np.asarray(test_indices, dtype=np.int64)
        self.validation_indices = (
            None if validation_indices is None else np.asarray(validation_indices, dtype=np.int64)
        )
        if self.validation_indices is not None and np.intersect1d(self.validation_indices, self.test_indices).size:
            raise ValueError("validation rows overlap the test fold; the test fold must never choose")
        self.shuffle_seed = int(torch.initial_seed() if shuffle_seed is None else shuffle_seed)

    def _subset(self, indices: np.ndarray | None, with_rows: bool = False) -> TensorDataset:
        if self.features is None or self.targets is None:
            raise RuntimeError("call prepare_data() before asking for loaders")
        if indices is None:
            raise RuntimeError("call set_fold(train, test) before asking for loaders")
        index = torch.from_numpy(indices)
        if with_rows:
            # Items carry their manifest row, so that the repeats a distributed sampler
            # adds are recognised and counted once (EmotionClassifier, UtterancePredictions).
            return TensorDataset(self.features[index], self.targets[index], index.clone())
        return TensorDataset(self.features[index], self.targets[index])

    def training_loader(self, rows: np.ndarray | None, seed: int, first_epoch: int = 0) -> DataLoader:
        """Batches of `rows` (x, y), in each epoch's order drawn from (seed, epoch) alone.

        The fold's own loader (`train_dataloader`), and each fold's in a stacked run
        (ser.training.stacked), which trains several folds' loaders at once.
        """
        dataset = self._subset(rows)
        sampler = EpochSeededSampler(len(dataset), seed, first_epoch)
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler,
            num_workers=self.num_workers, drop_last=False,
        )

    def evaluation_loader(self, rows: np.ndarray | None) -> DataLoader:
        """Batches of `rows` in order, with their manifest rows (x, y, rows), so that
        evaluation metrics count each utterance once."""
        return DataLoader(
            self._subset(rows, with_rows=True), batch_size=self.batch_size, shuffle=False,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        seed = torch.initial_seed() if self.shuffle_seed is None else self.shuffle_seed
        return self.training_loader(self.train_indices, seed)

    def val_dataloader(self) -> DataLoader | list:
        # No validation split (the paper protocol): an empty list makes Lightning skip the
        # validation loop.
        if self.validation_indices is None:
            return []
        return self.evaluation_loader(self.validation_indices)

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_loader(self.test_indices)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class CorpusDataModule(FoldDataModule):
    """A corpus parsed from its audio files, with cached features.

    `on_bad_file`: "error" stops at the first unusable file with a message naming it;
    "skip" leaves such files out, logs them and lists them in `skipped_files` (the
    driver writes that list to results.json). `feature_device`: "auto" (the GPU when
    present), "cpu" or "cuda". `load_threads`: files read and resampled in parallel
    (null: up to 4).
    """

    def __init__(
        self,
        corpus: str,
        root: str | None,
        features: dict | AnyFeatureSettings,
        cache_dir: str | None = None,
        signal_length: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        on_bad_file: str = "error",
        check_counts: bool = True,
        feature_device: str = "auto",
        load_threads: int | None = None,
    ) -> None:
        super().__init__(corpus=corpus, batch_size=batch_size, num_workers=num_workers)
        if root is None:
            raise CorpusError(
                f"dataset.root is not set for corpus {corpus!r}: pass dataset.root=PATH "
                f"pointing at the downloaded corpus"
            )
        self.root = Path(root).expanduser().resolve()
        self.features_config = features
        self.signal_length = signal_length
        self._feature_settings: AnyFeatureSettings | None = None
        if signal_length is not None or self.corpus.signal_length is not None:
            # The corpus's length is a duration: samples at 22 050 Hz (docs/reference.md),
            # taken at the recipe's own rate (16 kHz for features=ssl).
            corpus_seconds = None if self.corpus.signal_length is None else self.corpus.signal_length / CORPUS_RATE
            self._feature_settings = feature_settings(features, signal_length, corpus_seconds)
        self.cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir else None
        if on_bad_file not in BAD_FILE_CHOICES:
            raise ConfigError(f"dataset.on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.on_bad_file = on_bad_file
        self.check_counts = check_counts
        resolve_feature_device(str(feature_device))  # a bad setting fails here, not later
        self.feature_device = str(feature_device)
        self.load_threads = load_threads or min(4, os.cpu_count() or 1)

    @property
    def feature_settings(self) -> AnyFeatureSettings:
        """The recipe and signal length; a corpus without a fixed length (the user's own)
        knows it once its manifest is read (`build_manifest`)."""
        if self._feature_settings is None:
            raise RuntimeError(f"{self.corpus.name}: the signal length is known once build_manifest() has run")
        return self._feature_settings

    # -- preparation --------------------------------------------------------------------
    def build_manifest(self) -> Manifest:
        """Parse the corpus directory (subclasses may create it first)."""
        manifest = self.corpus.build_manifest(self.root, check_counts=self.check_counts)
        if self._feature_settings is None:
            self._feature_settings = feature_settings(
                self.features_config, seconds=covering_seconds(manifest)
            )
            log.info(
                "%s: dataset.signal_length null: %d samples at %d Hz, covering %d%% of the utterances",
                self.corpus.name, self._feature_settings.signal_length,
                self._feature_settings.sample_rate, round(COVERED_SHARE * 100),
            )
        return manifest

    def identity_parts(self) -> list[Any]:
        # The signal length too: with dataset.signal_length null the data chooses it.
        return [*super().identity_parts(), self.feature_settings.signal_length]

    def cache_path(self, manifest: Manifest) -> Path | None:
        if self.cache_dir is None:
            return None
        key = f"{self.corpus.name}-{manifest.fingerprint()}-{self.feature_settings.key()}"
        return self.cache_dir / f"features-{key}-v{FEATURE_CACHE_VERSION}.pt"

    def prepare_data(self) -> None:
        """Parse the corpus; load its features from the cache, or extract and cache them
        (ser.data.extraction: one process extracts, the others wait and read)."""
        if self.features is not None:
            return
        manifest = self.build_manifest()
        chosen = "null, chosen by the data" if self.signal_length is None else self.signal_length
        check_features_fit(self.feature_settings, len(manifest), FEATURE_BATCH_SIZE, f"dataset.signal_length={chosen}")
        load_or_extract(
            self.cache_path(manifest), lambda: self._extract(manifest),
            lambda cached: self._adopt(manifest, cached), self.on_bad_file,
        )

    def _extract(self, manifest: Manifest) -> dict[str, Any]:
        return extract_manifest(
            manifest, self.feature_settings, feature_device=self.feature_device,
            on_bad_file=self.on_bad_file, load_threads=self.load_threads, progress=self.progress,
        )

    def _adopt(self, manifest: Manifest, cached: dict[str, Any]) -> None:
        rows = cached["rows"].tolist()
        manifest.utterances = [manifest.utterances[i] for i in rows]
        labels = torch.tensor(manifest.labels, dtype=torch.long)
        self.manifest = manifest
        self.features = cached["features"]
        self.targets = labels
        self.skipped_files = json.loads(cached["skipped"])


class SyntheticDataModule(CorpusDataModule):
    """The generated default corpus: written into `root` on first use, reused after."""

    def __init__(self, generator: dict | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("corpus", "synthetic")
        super().__init__(**kwargs)
        self.generator = dict(generator or {})

    def build_manifest(self) -> Manifest:
        from ser.data.synthetic import SyntheticCorpusSettings, ensure_corpus

        ensure_corpus(self.root, SyntheticCorpusSettings(**self.generator))
        return super().build_manifest()
