"""A corpus's features: its audio read a few files at a time, turned into features in
batches (on the GPU when there is one) and cached, atomically and under a lock.

`extract_manifest` reads every file of a manifest and returns what the cache holds:
`features` (N, frames, features), the manifest `rows` kept, and the `skipped` bad files
(JSON). `load_or_extract` serves that from a cache file, or extracts and writes it; the
DataModule (ser.data.datamodule) adopts the result.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser.data.audio import AudioFileError, is_silent, load_audio
from ser.data.corpora import CorpusError
from ser.data.feature_kinds import AnyFeatureSettings
from ser.data.features import fix_length, non_finite_message, non_finite_rows
from ser.data.manifest import Manifest
from ser.errors import ConfigError
from ser.tracking.atomic import atomic_torch_save, exclusive_lock
from ser.tracking.progress import bar

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 1
# Utterances loaded and turned into features at a time: bounds the raw audio held in
# memory (IEMOCAP's 5531 x 310 000 samples would be 6.9 GB at once).
FEATURE_BATCH_SIZE = 256
FEATURE_DEVICES = ("auto", "cpu", "cuda")
BAD_FILE_CHOICES = ("error", "skip")


class SilentAudioWarning(UserWarning):
    """A file whose samples are all (near) zero: valid audio, but likely a recording fault."""


def resolve_feature_device(setting: str) -> torch.device:
    """The device `dataset.feature_device` names: auto = the GPU when there is one."""
    if setting not in FEATURE_DEVICES:
        raise ConfigError(
            f"dataset.feature_device must be one of {list(FEATURE_DEVICES)}, got {setting!r}"
        )
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("dataset.feature_device=cuda, but no CUDA device is available")
    return torch.device(setting)


def _load(path: str, sample_rate: int) -> tuple[np.ndarray | None, Exception | None]:
    try:
        return load_audio(path, sample_rate), None
    except (AudioFileError, FileNotFoundError) as error:
        return None, error


def _loaded(
    paths: list[str], sample_rate: int, threads: int
) -> Iterator[tuple[np.ndarray | None, Exception | None]]:
    """(signal, error) per path, in order, read by a few threads at a time."""
    for start in range(0, len(paths), FEATURE_BATCH_SIZE):
        chunk = paths[start : start + FEATURE_BATCH_SIZE]
        if threads == 1:
            yield from (_load(path, sample_rate) for path in chunk)
        else:
            with ThreadPoolExecutor(threads) as pool:
                yield from pool.map(_load, chunk, [sample_rate] * len(chunk))


def extract_manifest(
    manifest: Manifest,
    settings: AnyFeatureSettings,
    *,
    feature_device: str,
    on_bad_file: str,
    load_threads: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Features of every readable file of `manifest` (see the module doc for the keys).

    `on_bad_file="error"` raises the first unusable file's error; "skip" leaves such
    files out and lists them; a file whose features are not finite (samples too large for the
    power spectrum) is such a file. Silent files are kept with a warning. `progress`: a bar
    over the files (done/total, rate, time left; ser.tracking.progress).
    """
    device = resolve_feature_device(feature_device)
    pieces: list[torch.Tensor] = []
    signals: list[np.ndarray] = []
    kept: list[int] = []
    batch_rows: list[int] = []  # the manifest rows of `signals`
    skipped: list[dict[str, str]] = []

    def flush() -> None:
        if not signals:
            return
        features = settings.extract(torch.from_numpy(np.stack(signals)), device=device)
        bad = non_finite_rows(features)  # finite samples can still overflow the power spectrum
        for index in bad:
            error = AudioFileError(non_finite_message(paths[batch_rows[index]], signals[index]))
            if on_bad_file == "error":
                raise error
            skipped.append({"path": paths[batch_rows[index]], "reason": str(error)})
        good = [i for i in range(len(signals)) if i not in bad]
        if good:
            pieces.append(features[good] if bad else features)
        kept.extend(batch_rows[i] for i in good)
        signals.clear()
        batch_rows.clear()

    paths = [u.path for u in manifest.utterances]
    with bar(f"{manifest.corpus}: features", len(paths), enabled=progress) as files:
        for row, (signal, error) in enumerate(_loaded(paths, settings.sample_rate, load_threads)):
            files.advance()
            if error is not None:
                if on_bad_file == "error":
                    raise error
                skipped.append({"path": paths[row], "reason": str(error)})
                continue
            assert signal is not None
            if is_silent(signal):
                message = f"{paths[row]}: the audio is silent (peak below 1e-4); kept as it is"
                log.warning(message)
                warnings.warn(message, SilentAudioWarning, stacklevel=2)
            signals.append(fix_length(np.asarray(signal, dtype=np.float32), settings.signal_length))
            batch_rows.append(row)
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
            f"{manifest.corpus}: no readable audio under {manifest.root!r} "
            f"({len(skipped)} file(s) skipped as unreadable)"
        )
    return {
        "features": torch.cat(pieces).contiguous(),
        "rows": torch.tensor(kept, dtype=torch.long),
        "skipped": json.dumps(skipped),
    }


def _use_cache(path: Path, use: Callable[[dict[str, Any]], None], on_bad_file: str) -> bool:
    """Hand the cached features at `path` to `use`; False (with a warning) if unusable."""
    try:
        cached = torch.load(path, weights_only=True)
        if on_bad_file == "error" and json.loads(cached["skipped"]):
            # Written by a skip run: re-reading reports the bad files as errors.
            raise ValueError("it left out bad files, and dataset.on_bad_file=error")
        use(cached)
    except Exception as error:  # a damaged or unsuitable cache is rebuilt, never trusted
        log.warning("not using feature cache %s (%s)", path, error)
        return False
    log.info("loaded cached features %s", path)
    return True


def load_or_extract(
    path: Path | None,
    extract: Callable[[], dict[str, Any]],
    use: Callable[[dict[str, Any]], None],
    on_bad_file: str,
) -> None:
    """Give `use` the features cached at `path`, or those `extract` returns (then cached).

    One process extracts; others that need the same cache file meanwhile (DDP ranks
    started together by torchrun or SLURM, fold-parallel jobs) wait on a file lock, then
    read it. Not a torch.distributed barrier: the engine prepares the data before any
    Trainer creates a process group, and sweep jobs share none. A cache that cannot be
    used (damaged, or `use` refuses it) is rebuilt, never trusted. `path` None: no cache.
    """
    if path is None:
        use(extract())
        return
    waiting = f"waiting for another process to extract the features into {path}"
    with exclusive_lock(path, waiting=waiting):
        if path.exists() and _use_cache(path, use, on_bad_file):
            return
        cached = extract()
        atomic_torch_save(cached, path)
    use(cached)
