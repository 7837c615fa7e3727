"""LightningDataModules: manifest -> cached features -> per-fold loaders.

`CorpusDataModule` does the work for every corpus; a corpus differs only in its
`Corpus` layout (ser.data.corpora). Features are extracted once per corpus state and
feature settings, cached under a key made of both, and kept in memory as tensors.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ser.data.corpora import Corpus, CorpusError, get_corpus
from ser.data.manifest import Manifest
from ser.features import FeatureSettings, extract_features, fix_length

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 1


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write `obj` to `path` so that a crash never leaves a partial file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class CorpusDataModule(pl.LightningDataModule):
    """Features of one corpus in memory, served fold by fold.

    Call `prepare_data()` (parse, extract or load cached features), `setup()`, then
    `set_fold(train_indices, test_indices)` before each fit/test.
    """

    def __init__(
        self,
        corpus: str,
        root: str | None,
        features: dict | FeatureSettings,
        cache_dir: str | None = None,
        signal_length: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        on_bad_file: str = "error",
        check_counts: bool = True,
    ) -> None:
        super().__init__()
        self.corpus: Corpus = get_corpus(corpus)
        if root is None:
            raise CorpusError(
                f"dataset.root is not set for corpus {corpus!r}: pass dataset.root=PATH "
                f"pointing at the downloaded corpus"
            )
        self.root = Path(root).expanduser().resolve()
        settings = dict(features) if not isinstance(features, FeatureSettings) else asdict(features)
        settings["signal_length"] = int(signal_length or self.corpus.signal_length)
        self.feature_settings = FeatureSettings(**settings)
        self.cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir else None
        if batch_size < 1:
            raise ValueError(f"dataset.batch_size must be a positive integer, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"dataset.on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.on_bad_file = on_bad_file
        self.check_counts = check_counts
        self.manifest: Manifest | None = None
        self.features: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.skipped_files: list[dict[str, str]] = []
        self.train_indices: np.ndarray | None = None
        self.test_indices: np.ndarray | None = None

    # -- what the rest of the code reads ------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.corpus.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.corpus.class_names)

    @property
    def input_dim(self) -> int:
        return self.feature_settings.num_features

    # -- preparation --------------------------------------------------------------------
    def build_manifest(self) -> Manifest:
        """Parse the corpus directory (subclasses may create it first)."""
        return self.corpus.build_manifest(self.root, check_counts=self.check_counts)

    def cache_path(self, manifest: Manifest) -> Path | None:
        if self.cache_dir is None:
            return None
        key = f"{self.corpus.name}-{manifest.fingerprint()}-{self.feature_settings.key()}"
        return self.cache_dir / f"features-{key}-v{FEATURE_CACHE_VERSION}.pt"

    def prepare_data(self) -> None:
        if self.features is not None:
            return
        manifest = self.build_manifest()
        path = self.cache_path(manifest)
        if path is not None and path.exists():
            try:
                cached = torch.load(path, weights_only=True)
                self._adopt(manifest, cached)
                log.info("loaded cached features %s", path)
                return
            except Exception as error:  # a damaged cache is rebuilt, never trusted
                log.warning("ignoring unreadable feature cache %s (%s)", path, error)
        cached = self._extract(manifest)
        if path is not None:
            atomic_torch_save(cached, path)
        self._adopt(manifest, cached)

    def _extract(self, manifest: Manifest) -> dict[str, Any]:
        from ser.data.audio import AudioFileError, load_audio

        settings = self.feature_settings
        signals, kept, skipped = [], [], []
        for row, utterance in enumerate(manifest.utterances):
            try:
                signal = load_audio(utterance.path, settings.sample_rate)
            except AudioFileError as error:
                if self.on_bad_file == "error":
                    raise
                skipped.append({"path": utterance.path, "reason": str(error)})
                continue
            signals.append(fix_length(np.asarray(signal, dtype=np.float32), settings.signal_length))
            kept.append(row)
        if skipped:
            log.warning(
                "skipped %d bad file(s) (dataset.on_bad_file=skip): %s",
                len(skipped), ", ".join(s["path"] for s in skipped),
            )
        if not signals:
            raise CorpusError(f"{self.corpus.name}: no readable audio under {str(self.root)!r}")
        waveforms = torch.from_numpy(np.stack(signals))
        features = extract_features(waveforms, settings)
        return {
            "features": features.contiguous(),
            "rows": torch.tensor(kept, dtype=torch.long),
            "skipped": json.dumps(skipped),
        }

    def _adopt(self, manifest: Manifest, cached: dict[str, Any]) -> None:
        rows = cached["rows"].tolist()
        manifest.utterances = [manifest.utterances[i] for i in rows]
        labels = torch.tensor(manifest.labels, dtype=torch.long)
        self.manifest = manifest
        self.features = cached["features"]
        self.targets = labels
        self.skipped_files = json.loads(cached["skipped"])

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()

    # -- folds --------------------------------------------------------------------------
    def set_fold(self, train_indices: Sequence[int], test_indices: Sequence[int]) -> None:
        """Select the utterances the next fit and test use (row indices of the manifest)."""
        self.train_indices = np.asarray(train_indices, dtype=np.int64)
        self.test_indices = np.asarray(test_indices, dtype=np.int64)

    def _subset(self, indices: np.ndarray | None) -> TensorDataset:
        if self.features is None or self.targets is None:
            raise RuntimeError("call prepare_data() before asking for loaders")
        if indices is None:
            raise RuntimeError("call set_fold(train, test) before asking for loaders")
        index = torch.from_numpy(indices)
        return TensorDataset(self.features[index], self.targets[index])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self._subset(self.train_indices), batch_size=self.batch_size, shuffle=True,
            num_workers=self.num_workers, drop_last=False,
        )

    def test_dataloader(self) -> DataLoader:
        return DataLoader(
            self._subset(self.test_indices), batch_size=self.batch_size, shuffle=False,
            num_workers=self.num_workers,
        )

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


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
