"""The one way this project reads a checkpoint file: nothing in it can run code.

Every reader goes through here (resume, also Lightning's own loads through
`AtomicCheckpointIO`; best-epoch selection; ser.tools.inference for predict and export).
`load_file` accepts a torch.save archive that torch's weights-only loader accepts and
that holds only tensors and plain containers (`CHECKPOINT_TYPES`), refusing any other
callable before an object is built; `read_checkpoint` a train.py checkpoint
(`state_dict`, `ser_metadata`); `saved_config_hash` the configuration it was saved by,
read first; `build_network` the network of `ser_metadata["net"]` from the project's
registry (ser.models.registry), with its weights.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ser.errors import InputError, InputNotFound
from ser.models import registry

METADATA_KEY = "ser_metadata"
NET_PREFIX = "net."
EXPECTED = "a checkpoint written by `python train.py` (e.g. OUTPUT_DIR/checkpoints/fold_00/last.ckpt)"

# What a checkpoint written by this project holds: the dicts of Lightning's checkpoint
# (the model's state dict is an OrderedDict), tensors, and plain values. Loop, callback,
# optimiser and hyperparameter state are ints, floats, strings, lists and dicts. Torch's
# weights-only loader also builds dtypes, sizes, devices and the like; a file holding them
# is not one of ours and is refused. Widening this set means accepting more in a file.
CHECKPOINT_TYPES = frozenset({dict, OrderedDict, list, tuple, str, int, float, bool, type(None), torch.Tensor})


class CheckpointError(InputError):
    """A file given as a checkpoint is not a usable checkpoint of this framework.

    The message names the file, says what is wrong and what was expected; `reason` is
    what is wrong alone (for a line that names the file itself).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


def refused(path: str | Path, reason: str) -> CheckpointError:
    """A CheckpointError naming `path`, saying `reason` and what a checkpoint is."""
    return CheckpointError(f"{path}: {reason}; expected {EXPECTED}", reason)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_globals(path: Path) -> None:
    """Refuse a file whose pickle names a callable torch's weights-only loader would refuse
    (torch's static scan of the pickle: nothing is unpickled)."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (pickle.UnpicklingError, EOFError) as error:  # malformed, or opcodes torch never writes
        raise CheckpointError(f"its pickle cannot be checked for what it calls ({_first_line(error)})") from error
    if unsafe:
        shown = ", ".join(sorted(unsafe)[:4])
        raise CheckpointError(
            f"holds pickled objects other than tensors and plain containers ({shown}), "
            "which are not loaded for safety"
        )


def _check_contents(checkpoint: Any) -> None:
    """Refuse a loaded object holding anything but `CHECKPOINT_TYPES` (walked without
    recursion, each object once, so a deep or cyclic structure costs no stack)."""
    pending, seen = [checkpoint], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if type(item) not in CHECKPOINT_TYPES:
            raise CheckpointError(
                f"holds pickled objects other than tensors and plain containers "
                f"({type(item).__module__}.{type(item).__qualname__}), which this project never writes"
            )
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def load_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """The object a torch.save zip archive at `path` holds, loaded without running code.

    CheckpointError (naming the file) for a missing file, a directory, a file that is no
    torch.save archive, a pickle that names a callable outside torch's weights-only
    allow-list, contents other than `CHECKPOINT_TYPES`, or one torch cannot read.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFound(f"checkpoint not found: {path} (expected {EXPECTED})")
    if path.is_dir():
        raise refused(path, "is a directory")
    # torch.save (and Lightning) write zip archives; checking first gives a clear message
    # for text files, audio and the like, and refuses torch's legacy (bare pickle) format.
    if not zipfile.is_zipfile(path):
        raise refused(path, "not a PyTorch checkpoint (no torch.save zip archive)")
    try:
        _check_globals(path)
        # torch's own restricted unpickler (no safe_globals are added: our checkpoints need
        # nothing beyond its defaults), then the narrower check of what it built.
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        _check_contents(checkpoint)
        return checkpoint
    except CheckpointError as error:
        raise refused(path, str(error)) from error
    except pickle.UnpicklingError as error:
        raise refused(
            path, "holds pickled objects other than tensors and plain containers, which are "
            f"not loaded for safety ({_first_line(error)})"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise refused(
            path, f"could not be read as a PyTorch checkpoint ({type(error).__name__}: {_first_line(error)})"
        ) from error


def load_dict(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """`load_file`, and the object must be a dict (every Lightning checkpoint is)."""
    checkpoint = load_file(path, map_location)
    if not isinstance(checkpoint, dict):
        raise refused(path, f"holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def saved_config_hash(checkpoint: Mapping[str, Any], key: str = "config_hash") -> str | None:
    """The config hash (or the data hash, `key="data_hash"`) in a checkpoint's `ser_metadata`
    (None if it has none)."""
    metadata = checkpoint.get(METADATA_KEY)
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) else None


def checkpoint_epoch(path: str | Path) -> int:
    """The (0-based) epoch a checkpoint was saved in."""
    epoch = load_dict(path).get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise refused(path, "has no integer 'epoch'")
    return epoch


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A train.py checkpoint at `path`, loaded safely; CheckpointError for any other file.

    The trade-off of loading only tensors and plain containers: a checkpoint that pickles
    other objects (e.g. an OmegaConf ``DictConfig`` in its hyperparameters) is refused
    rather than loaded, because unpickling it could run arbitrary code.
    """
    checkpoint = load_dict(path)
    if "state_dict" not in checkpoint or not isinstance(checkpoint["state_dict"], Mapping):
        keys = ", ".join(sorted(map(str, checkpoint))[:8]) or "none"
        raise CheckpointError(
            f"{path}: has no 'state_dict' (keys: {keys}), so it is not a Lightning "
            f"checkpoint; expected {EXPECTED}"
        )
    if METADATA_KEY not in checkpoint:
        raise CheckpointError(
            f"{path}: a Lightning checkpoint without '{METADATA_KEY}' (class names, feature "
            f"settings, network), so it cannot be used without its DataModule; expected {EXPECTED}"
        )
    metadata = checkpoint[METADATA_KEY]
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: '{METADATA_KEY}' is not a dict; expected {EXPECTED}")
    missing = [key for key in ("class_names", "feature_settings", "net") if key not in metadata]
    if missing:
        raise CheckpointError(f"{path}: '{METADATA_KEY}' lacks {', '.join(missing)}; expected {EXPECTED}")
    return checkpoint


def network_weights(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's entries of a Lightning state dict, without their `net.` prefix."""
    return {
        key[len(NET_PREFIX):]: value
        for key, value in checkpoint["state_dict"].items()
        if isinstance(key, str) and key.startswith(NET_PREFIX)
    }


def build_network(path: str | Path, checkpoint: Mapping[str, Any]) -> nn.Module:
    """The registered network `ser_metadata["net"]` describes, holding the checkpoint's weights.

    The description is checked against the registry before anything is built, and the
    weights' names and shapes against the network's (computed on the meta device) before
    it is allocated; any mismatch is a CheckpointError naming the file.
    """
    try:
        name, arguments = registry.network_spec(checkpoint[METADATA_KEY]["net"])
    except registry.NetworkSpecError as error:
        raise CheckpointError(
            f"{path}: refusing to instantiate '{METADATA_KEY}.net' ({error}); nothing was built"
        ) from error
    weights = network_weights(checkpoint)
    try:
        expected = registry.expected_state_shapes(name, arguments)
    except (ValueError, TypeError) as error:  # e.g. an unknown implementation or regulariser
        raise CheckpointError(f"{path}: cannot build network {name!r} ({error})") from error
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [key for key in expected if key in weights and (
        not isinstance(weights[key], torch.Tensor) or weights[key].shape != expected[key]
    )]
    if missing or unexpected or wrong:
        problems = [
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(
            f"{path}: the weights do not fit the network described in '{METADATA_KEY}' "
            f"({'; '.join(problems)})"
        )
    net = registry.build_network(name, arguments)
    net.load_state_dict(weights, strict=True)
    return net
