"""The TIM-Net authors' shared feature files, loaded without letting a file run code.

The files (e.g. `EMODB.npy`) are `np.save` of a dict `{"x": float32 (N, T, 39),
"y": one-hot (N, C)}`, i.e. a pickle inside a .npy container. Unpickling runs whatever
callables a file names, so a file from the internet could run code on load, and even
numpy's own array builders trust the bytes they are given. The file is read by
ser.data.safe_arrays, which refuses every global but numpy's array builders, object
dtypes, and sizes the file cannot back, before numpy builds anything.

`TimNetFeatureDataModule` serves such a file to the cross-validation driver in place of
a corpus: `python train.py dataset=timnet_npy dataset.path=FILE dataset.corpus=emodb`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser.data.datamodule import FoldDataModule
from ser.data.features import FeatureSettings
from ser.data.manifest import Manifest, Utterance
from ser.data.safe_arrays import FeatureFileError, UnsafePickleError, read_feature_file

# UnsafePickleError is re-exported: callers catch the reader's errors from here.
__all__ = ["FeatureFileError", "TimNetFeatureDataModule", "UnsafePickleError", "check_feature_arrays",
           "load_feature_file"]

log = logging.getLogger(__name__)

UNKNOWN_SPEAKER = "unknown"


def load_feature_file(path: str | Path) -> dict[str, Any]:
    """The arrays of a shared feature file: `.npy` of a pickled dict, raw pickle, or `.npz`.

    Read by ser.data.safe_arrays, which runs no code from the file and allocates no more
    than its bytes could fill.
    """
    obj = read_feature_file(path)
    if not isinstance(obj, dict):
        raise FeatureFileError(
            f"{Path(path).expanduser()}: holds a {type(obj).__name__}; expected a dict with keys 'x' and 'y'"
        )
    return obj


def check_feature_arrays(
    arrays: dict[str, Any], num_classes: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, T, F), class indices (N,)) after checking shapes and labels.

    `y` may be one-hot (N, C), soft or smoothed (N, C) - argmax is taken, with a
    warning - or integer class indices (N,).
    """
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise FeatureFileError(
            f"{source}: missing key(s) {missing}; expected a dict with 'x' (N, T, 39) and "
            f"'y' (N, C), found keys {sorted(map(str, arrays))}"
        )
    x, y = arrays["x"], arrays["y"]
    for key, value in (("x", x), ("y", y)):
        # bool, integers and floats; complex would lose its imaginary part in the cast.
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise FeatureFileError(
                f"{source}: '{key}' is a {type(value).__name__} of "
                f"{getattr(value, 'dtype', '?')}; expected a numeric numpy array"
            )
    if x.ndim != 3:
        raise FeatureFileError(
            f"{source}: 'x' has shape {x.shape}; expected (utterances, frames, features)"
        )
    if 0 in x.shape:
        raise FeatureFileError(
            f"{source}: 'x' has shape {x.shape}; expected at least one utterance, frame and feature"
        )
    if y.ndim not in (1, 2) or 0 in y.shape:
        raise FeatureFileError(
            f"{source}: 'y' has shape {y.shape}; expected (N, {num_classes}) one-hot rows or "
            f"(N,) class indices"
        )
    if len(y) != len(x):
        raise FeatureFileError(
            f"{source}: 'x' has {len(x)} rows but 'y' has {len(y)}; expected one label per row"
        )
    # Checked after the cast: 1e48 is finite as float64 but inf as float32, the network's type.
    with np.errstate(over="ignore"):
        features = x.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(features)))
    if bad:
        raise FeatureFileError(
            f"{source}: 'x' holds {bad} NaN or infinite value(s) as float32, the network's "
            f"type (finite up to 3.4e38); expected finite features"
        )
    if not np.all(np.isfinite(y)):
        raise FeatureFileError(f"{source}: 'y' holds NaN or infinite values; expected labels")
    if y.ndim == 1:
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= num_classes:
            raise FeatureFileError(
                f"{source}: 'y' is 1-D; expected integer class indices in 0..{num_classes - 1}"
            )
        return features, y.astype(np.int64)
    if y.shape[1] != num_classes:
        raise FeatureFileError(
            f"{source}: 'y' has shape {y.shape}; expected (N, {num_classes}) one-hot rows for "
            f"the corpus's {num_classes} classes (is dataset.corpus right?)"
        )
    labels = y.argmax(axis=1)
    top = np.take_along_axis(y, labels[:, None], axis=1)[:, 0]
    tied = np.flatnonzero(np.sum(y == top[:, None], axis=1) > 1)
    if len(tied):
        raise FeatureFileError(
            f"{source}: rows {tied[:10].tolist()} of 'y' have no single largest entry; "
            f"expected one-hot labels"
        )
    one_hot = np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)
    if not one_hot:
        warnings.warn(
            f"{source}: 'y' is not one-hot (smoothed or soft labels, e.g. max {float(top.min()):.3g}); "
            f"using each row's argmax as its class",
            stacklevel=2,
        )
    return features, labels.astype(np.int64)


class TimNetFeatureDataModule(FoldDataModule):
    """The folds of a shared TIM-Net feature file, for `dataset=timnet_npy`.

    The rows are kept in file order, which is the reference order (class, then file
    name), so the paper's KFold splits apply. Speakers are unknown; the manifest's paths
    are `FILE#row`.
    """

    has_audio = False

    def __init__(
        self,
        path: str,
        corpus: str,
        features: dict | FeatureSettings | None = None,
        signal_length: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        check_counts: bool = True,
    ) -> None:
        super().__init__(corpus=corpus, batch_size=batch_size, num_workers=num_workers)
        if path is None:
            raise FeatureFileError("dataset.path is not set: pass dataset.path=FILE.npy")
        self.path = Path(path).expanduser().resolve()
        if isinstance(features, FeatureSettings):
            settings = asdict(features)
        else:
            settings = dict(features or {})
        if settings.get("kind", "mfcc") != "mfcc":
            raise FeatureFileError(
                f"dataset=timnet_npy holds the TIM-Net authors' MFCCs; features.kind={settings['kind']} "
                f"cannot apply to it (use features=mfcc, or a corpus's audio)"
            )
        # The settings the file was made with, as TIM-Net's recipe for this corpus.
        settings["signal_length"] = int(signal_length or self.corpus.signal_length)
        self.feature_settings = FeatureSettings(**settings)
        self.check_counts = check_counts

    def identity_parts(self) -> list[Any]:
        # The rows name the file (FILE#i); the file itself is the data.
        stat = self.path.stat()
        return [*super().identity_parts(), stat.st_size, stat.st_mtime_ns]

    def build_manifest(self) -> Manifest:
        """Load and check the file; the manifest has one row per feature row."""
        self.prepare_data()
        assert self.manifest is not None
        return self.manifest

    def prepare_data(self) -> None:
        if self.features is not None:
            return
        source = str(self.path)
        arrays = load_feature_file(self.path)
        x, labels = check_feature_arrays(arrays, self.num_classes, source)
        expected_frames = self.feature_settings.num_frames
        if x.shape[1] != expected_frames:
            warnings.warn(
                f"{source}: {x.shape[1]} frames per utterance, but TIM-Net's recipe for "
                f"{self.corpus.name} gives {expected_frames}; is dataset.corpus right?",
                stacklevel=2,
            )
        names = self.class_names
        rows = [
            Utterance(f"{source}#{i}", names[label], UNKNOWN_SPEAKER)
            for i, label in enumerate(labels.tolist())
        ]
        manifest = Manifest(self.corpus.name, source, list(names), rows)
        if self.check_counts:
            self.corpus.check_counts(manifest)
        self.manifest = manifest
        self.features = torch.from_numpy(np.ascontiguousarray(x))
        self.targets = torch.from_numpy(labels)
        log.info("loaded %d utterances %s from %s", len(rows), tuple(x.shape[1:]), source)
