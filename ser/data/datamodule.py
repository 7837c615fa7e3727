"""LightningDataModules: manifest -> cached features -> per-fold loaders.

`CorpusDataModule` does the work for every corpus; a corpus differs only in its
`Corpus` layout (ser.data.corpora), and each has a thin named subclass
(`EmoDBDataModule`, `RavdessDataModule`, ...). Features are extracted once per corpus
state and feature settings, in batches (on the GPU when there is one), cached under a
key made of both, and kept in memory as tensors. `FoldDataModule` is the part every
data source shares (the TIM-Net feature files use it too): tensors in memory, served
fold by fold.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ser.data.corpora import Corpus, CorpusError, get_corpus
from ser.data.manifest import Manifest
from ser.data.sampling import EpochSeededSampler
from ser.features import FeatureSettings, extract_features, fix_length
from ser.tracking.atomic import atomic_torch_save, exclusive_lock

log = logging.getLogger(__name__)

# Without a validation split `val_dataloader` returns [] on purpose; Lightning warns about it.
warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")

FEATURE_CACHE_VERSION = 1
# Utterances loaded and turned into features at a time: bounds the raw audio held in
# memory (IEMOCAP's 5531 x 310 000 samples would be 6.9 GB at once).
FEATURE_BATCH_SIZE = 256
FEATURE_DEVICES = ("auto", "cpu", "cuda")


class SilentAudioWarning(UserWarning):
    """A file whose samples are all (near) zero: valid audio, but likely a recording fault."""


def resolve_feature_device(setting: str) -> torch.device:
    """The device `dataset.feature_device` names: auto = the GPU when there is one."""
    if setting not in FEATURE_DEVICES:
        raise ValueError(
            f"dataset.feature_device must be one of {list(FEATURE_DEVICES)}, got {setting!r}"
        )
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("dataset.feature_device=cuda, but no CUDA device is available")
    return torch.device(setting)


class FoldDataModule(pl.LightningDataModule):
    """Features and labels of one corpus in memory, served fold by fold.

    Subclasses fill `manifest`, `features` (N, frames, features) and `targets` (N,) in
    `prepare_data()`; the driver then calls `set_fold(train_indices, test_indices)`
    before each fit/test.
    """

    def __init__(self, corpus: str, batch_size: int = 64, num_workers: int = 0) -> None:
        super().__init__()
        self.corpus: Corpus = get_corpus(corpus)
        if batch_size < 1:
            raise ValueError(f"dataset.batch_size must be a positive integer, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.feature_settings: FeatureSettings
        self.manifest: Manifest | None = None
        self.features: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.skipped_files: list[dict[str, str]] = []
        self.train_indices: np.ndarray | None = None
        self.test_indices: np.ndarray | None = None
        self.validation_indices: np.ndarray | None = None
        self.shuffle_seed: int | None = None

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
        repeats it; None takes torch's current seed (set per fold by the driver).
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

    def train_dataloader(self) -> DataLoader:
        dataset = self._subset(self.train_indices)
        seed = torch.initial_seed() if self.shuffle_seed is None else self.shuffle_seed
        sampler = EpochSeededSampler(len(dataset), seed)
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler,
            num_workers=self.num_workers, drop_last=False,
        )

    def val_dataloader(self) -> DataLoader | list:
        # No validation split (the paper protocol): an empty list makes Lightning skip the
        # validation loop.
        if self.validation_indices is None:
            return []
        # With rows, as the test loader: validation metrics count each utterance once.
        return DataLoader(
            self._subset(self.validation_indices, with_rows=True), batch_size=self.batch_size,
            shuffle=False, num_workers=self.num_workers,
        )

    def test_dataloader(self) -> DataLoader:
        return DataLoader(
            self._subset(self.test_indices, with_rows=True), batch_size=self.batch_size, shuffle=False,
            num_workers=self.num_workers,
        )

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
        features: dict | FeatureSettings,
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
        settings = dict(features) if not isinstance(features, FeatureSettings) else asdict(features)
        settings["signal_length"] = int(signal_length or self.corpus.signal_length)
        self.feature_settings = FeatureSettings(**settings)
        self.cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir else None
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"dataset.on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.on_bad_file = on_bad_file
        self.check_counts = check_counts
        resolve_feature_device(str(feature_device))  # a bad setting fails here, not later
        self.feature_device = str(feature_device)
        if load_threads is not None and load_threads < 1:
            raise ValueError(f"dataset.load_threads must be positive or null, got {load_threads}")
        self.load_threads = load_threads or min(4, os.cpu_count() or 1)

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
        """Parse the corpus; load its features from the cache, or extract and cache them.

        One process extracts; others that need the same cache file meanwhile (DDP ranks
        started together by torchrun or SLURM, fold-parallel jobs) wait on a file lock,
        then read it. Not a torch.distributed barrier: the driver prepares the data before
        any Trainer creates a process group, and sweep jobs share none.
        """
        if self.features is not None:
            return
        manifest = self.build_manifest()
        path = self.cache_path(manifest)
        if path is None:
            self._adopt(manifest, self._extract(manifest))
            return
        waiting = f"waiting for another process to extract the features into {path}"
        with exclusive_lock(path.parent / f".{path.name}.lock", waiting=waiting):
            if path.exists() and self._adopt_cache(manifest, path):
                return
            cached = self._extract(manifest)
            atomic_torch_save(cached, path)
        self._adopt(manifest, cached)

    def _adopt_cache(self, manifest: Manifest, path: Path) -> bool:
        """Use the cached features at `path`; False (with a warning) if they cannot be used."""
        try:
            cached = torch.load(path, weights_only=True)
            if self.on_bad_file == "error" and json.loads(cached["skipped"]):
                # Written by a skip run: re-reading reports the bad files as errors.
                raise ValueError("it left out bad files, and dataset.on_bad_file=error")
            self._adopt(manifest, cached)
        except Exception as error:  # a damaged or unsuitable cache is rebuilt, never trusted
            log.warning("not using feature cache %s (%s)", path, error)
            return False
        log.info("loaded cached features %s", path)
        return True

    def _load(self, path: str) -> tuple[np.ndarray | None, Exception | None]:
        from ser.data.audio import AudioFileError, load_audio

        try:
            return load_audio(path, self.feature_settings.sample_rate), None
        except (AudioFileError, FileNotFoundError) as error:
            return None, error

    def _loaded(self, paths: list[str]) -> Iterator[tuple[np.ndarray | None, Exception | None]]:
        """(signal, error) per path, in order, read by a few threads at a time."""
        for start in range(0, len(paths), FEATURE_BATCH_SIZE):
            chunk = paths[start : start + FEATURE_BATCH_SIZE]
            if self.load_threads == 1:
                yield from map(self._load, chunk)
            else:
                with ThreadPoolExecutor(self.load_threads) as pool:
                    yield from pool.map(self._load, chunk)

    def _extract(self, manifest: Manifest) -> dict[str, Any]:
        from ser.data.audio import is_silent

        settings = self.feature_settings
        device = resolve_feature_device(self.feature_device)
        pieces: list[torch.Tensor] = []
        signals: list[np.ndarray] = []
        kept: list[int] = []
        skipped: list[dict[str, str]] = []

        def flush() -> None:
            if signals:
                waveforms = torch.from_numpy(np.stack(signals))
                pieces.append(extract_features(waveforms, settings, device=device))
                signals.clear()

        paths = [u.path for u in manifest.utterances]
        for row, (signal, error) in enumerate(self._loaded(paths)):
            if error is not None:
                if self.on_bad_file == "error":
                    raise error
                skipped.append({"path": paths[row], "reason": str(error)})
                continue
            assert signal is not None
            if is_silent(signal):
                message = f"{paths[row]}: the audio is silent (peak below 1e-4); kept as it is"
                log.warning(message)
                warnings.warn(message, SilentAudioWarning, stacklevel=2)
            signals.append(fix_length(np.asarray(signal, dtype=np.float32), settings.signal_length))
            kept.append(row)
            if len(signals) == FEATURE_BATCH_SIZE:
                flush()
        flush()
        if skipped:
            log.warning(
                "skipped %d bad file(s) (dataset.on_bad_file=skip): %s",
                len(skipped), ", ".join(s["path"] for s in skipped),
            )
        if not pieces:
            raise CorpusError(
                f"{self.corpus.name}: no readable audio under {str(self.root)!r} "
                f"({len(skipped)} file(s) skipped as unreadable)"
            )
        return {
            "features": torch.cat(pieces).contiguous(),
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


class FixedCorpusDataModule(CorpusDataModule):
    """A CorpusDataModule for one named corpus (`dataset.corpus` must agree if given)."""

    corpus_name: ClassVar[str]

    def __init__(self, corpus: str | None = None, **kwargs: Any) -> None:
        if corpus is not None and corpus != self.corpus_name:
            raise ValueError(
                f"{type(self).__name__} reads the {self.corpus_name!r} corpus, but "
                f"dataset.corpus={corpus!r}; use dataset={corpus} instead"
            )
        super().__init__(corpus=self.corpus_name, **kwargs)


class CasiaDataModule(FixedCorpusDataModule):
    """CASIA (Chinese, 6 classes, 4 speakers)."""

    corpus_name = "casia"


class EmoDBDataModule(FixedCorpusDataModule):
    """Berlin EMODB (German, 7 classes, 10 speakers)."""

    corpus_name = "emodb"


class EmovoDataModule(FixedCorpusDataModule):
    """EMOVO (Italian, 7 classes, 6 speakers)."""

    corpus_name = "emovo"


class IemocapDataModule(FixedCorpusDataModule):
    """IEMOCAP, 4 classes (exc merged into happy), 10 speakers in 5 sessions."""

    corpus_name = "iemocap"


class RavdessDataModule(FixedCorpusDataModule):
    """RAVDESS speech (English, 8 classes, 24 actors; song files left out)."""

    corpus_name = "ravdess"


class SaveeDataModule(FixedCorpusDataModule):
    """SAVEE (British English, 7 classes, 4 speakers; both file layouts)."""

    corpus_name = "savee"


DATAMODULES: dict[str, type[FixedCorpusDataModule]] = {
    cls.corpus_name: cls
    for cls in (
        CasiaDataModule, EmoDBDataModule, EmovoDataModule,
        IemocapDataModule, RavdessDataModule, SaveeDataModule,
    )
}
