"""The TIM-Net authors' shared feature files, loaded without letting a file run code.

The files (e.g. `EMODB.npy`) are `np.save` of a dict `{"x": float32 (N, T, 39),
"y": one-hot (N, C)}`, i.e. a pickle inside a .npy container. Unpickling runs whatever
callables a file names, so a file from the internet could run code on load. Here the
pickle is read by `SafeArrayUnpickler`, which only hands out numpy's array-building
functions and refuses every other global before anything is called.

`TimNetFeatureDataModule` serves such a file to the cross-validation driver in place of
a corpus: `python train.py dataset=timnet_npy dataset.path=FILE dataset.corpus=emodb`.
"""

from __future__ import annotations

import io
import logging
import pickle
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser.data.datamodule import FoldDataModule
from ser.data.manifest import Manifest, Utterance
from ser.features import FeatureSettings

log = logging.getLogger(__name__)

UNKNOWN_SPEAKER = "unknown"


class FeatureFileError(ValueError):
    """A feature file that is not a dict of numpy arrays in the shared TIM-Net format."""


class UnsafePickleError(FeatureFileError):
    """A pickle that asks for something other than numpy's array-building functions."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object for the globals an array pickle needs, under both the
    numpy 1 (`numpy.core`) and numpy 2 (`numpy._core`) module names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        # Protocol 5 pickles (Python >= 3.14's default) rebuild arrays from a buffer.
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts, lists and plain values, nothing else."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to load: its pickle asks for {module}.{name}, which "
                f"is not one of numpy's array-building functions. A TIM-Net feature file "
                f"holds only a dict of numpy arrays {{'x', 'y'}}; nothing in this file was run"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused to load: it uses persistent ids")


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle `data` allowing only numpy array reconstruction; `source` names it in errors."""
    try:
        return SafeArrayUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as error:
        raise FeatureFileError(
            f"{source}: not a readable pickle of numpy arrays ({type(error).__name__}: {error})"
        ) from error


def load_feature_file(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a shared feature file: `.npy` of a pickled dict, raw pickle, or `.npz`.

    Never runs code from the file: plain arrays are read with `allow_pickle=False`, and
    pickled objects go through `SafeArrayUnpickler`.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {source} (set dataset.path=FILE)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError:
        loaded = None  # pickled content: the restricted path below
    except (OSError, EOFError) as error:
        raise FeatureFileError(f"{source}: cannot be read as a .npy file ({error})") from error
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    if isinstance(loaded, np.ndarray):
        raise FeatureFileError(
            f"{source}: holds a single array of shape {loaded.shape}; expected a dict "
            f"{{'x': (N, T, 39), 'y': (N, C)}} as the TIM-Net feature files hold"
        )
    raw = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        raise FeatureFileError(f"{source}: a zip archive that numpy cannot read as .npz")
    obj = safe_unpickle(_npy_payload(raw, source), source)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.reshape(()).item()  # np.save wraps the dict in a 0-d object array
    if not isinstance(obj, dict):
        raise FeatureFileError(
            f"{source}: holds a {type(obj).__name__}; expected a dict with keys 'x' and 'y'"
        )
    return obj


def _npy_payload(raw: bytes, source: str) -> bytes:
    """The pickle inside a `.npy` file of an object array, or `raw` if it is not `.npy`."""
    if not raw.startswith(b"\x93NUMPY"):
        return raw
    handle = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            _shape, _order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            _shape, _order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as error:
        raise FeatureFileError(f"{source}: damaged .npy header ({error})") from error
    if dtype.kind != "O":
        raise FeatureFileError(f"{source}: a .npy file of dtype {dtype} that numpy cannot read")
    return raw[handle.tell():]


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
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.number):
            raise FeatureFileError(
                f"{source}: '{key}' is a {type(value).__name__} of "
                f"{getattr(value, 'dtype', '?')}; expected a numeric numpy array"
            )
    if x.ndim != 3:
        raise FeatureFileError(
            f"{source}: 'x' has shape {x.shape}; expected (utterances, frames, features)"
        )
    if len(y) != len(x):
        raise FeatureFileError(
            f"{source}: 'x' has {len(x)} rows but 'y' has {len(y)}; expected one label per row"
        )
    if not np.all(np.isfinite(x)):
        raise FeatureFileError(f"{source}: 'x' holds NaN or infinite values")
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
            raise FeatureFileError(
                f"{source}: 'y' is 1-D; expected integer class indices in 0..{num_classes - 1}"
            )
        return x.astype(np.float32), y.astype(np.int64)
    if y.ndim != 2 or y.shape[1] != num_classes:
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
    return x.astype(np.float32), labels.astype(np.int64)


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
        # The settings the file was made with, as TIM-Net's recipe for this corpus.
        settings["signal_length"] = int(signal_length or self.corpus.signal_length)
        self.feature_settings = FeatureSettings(**settings)
        self.check_counts = check_counts

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
