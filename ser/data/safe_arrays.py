"""Reading numpy arrays from files nobody vouches for: no code runs, no memory is forged.

A TIM-Net feature file is `np.save` of a dict: a pickle inside a `.npy` container. numpy's
own array builders trust the file (a forged dtype state yields an object array of raw
pointers, a forged shape allocates gigabytes, a `.npy` header may declare terabytes), and
numpy has no safe reader for pickled arrays, so this module is one: the opcodes are walked
first (pickletools) to check every length and memo index against the bytes present; the
unpickler's numpy builders only record their arguments, and each array is then built by
`np.frombuffer` from bytes in the file, once its dtype is a plain number type and its
shape fits; object dtypes are refused (the 0-d wrapper around the dict is never built);
`.npy`/`.npz` headers are checked before numpy reads anything. Every error is a
:class:`FeatureFileError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ser.errors import InputError, InputNotFound

NPY_MAGIC = b"\x93NUMPY"
# Plain numbers only: bool, signed/unsigned integers, floats (kind + itemsize).
NUMBER_DTYPE = re.compile(r"^(b1|[iu][1248]|f[248])$")
BYTE_ORDERS = ("<", ">", "|", "=")
# Deflate cannot expand data by more than about 1032:1, so a larger declared size is a lie.
MAX_DEFLATE_RATIO = 1100


class FeatureFileError(InputError):
    """A feature file that is not a dict of numpy arrays in the shared TIM-Net format."""


class UnsafePickleError(FeatureFileError):
    """A pickle that asks for something other than numpy's array-building functions."""


class _ArrayClass:
    """Stands for `numpy.ndarray`, which a pickle names only as `_reconstruct`'s argument."""

    __slots__ = ()


_ARRAY_CLASS = _ArrayClass()


class _Dtype:
    """A dtype as pickled: `numpy.dtype(spec, align, copy)` and then its state."""

    # Class defaults: a pickle may create a stand-in without calling __init__ (NEWOBJ).
    spec: Any = None
    order: Any = "|"
    plain_state = False

    def __init__(self, spec: Any, *_flags: Any) -> None:
        self.spec = spec
        self.order = "|"
        self.plain_state = True

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata]);
        # a plain number type has no subarray, names or fields. The flags are ignored:
        # the dtype is rebuilt from its spec, so a forged flag word can change nothing.
        if not isinstance(state, tuple) or len(state) < 5:
            self.plain_state = False
            return
        self.order = state[1]
        self.plain_state = state[2] is None and state[3] is None and state[4] is None

    @property
    def is_object(self) -> bool:
        return self.spec == "O8" and self.plain_state

    def build(self, source: str) -> np.dtype:
        """The numpy dtype, if it is a plain number type; refuse anything else."""
        if isinstance(self.spec, str) and self.spec.startswith("O"):
            raise FeatureFileError(
                f"{source}: refused to load: an object array (dtype {self.spec!r}): its items would be "
                f"Python objects, or pointers taken from the file; expected float or integer arrays"
            )
        if (
            not isinstance(self.spec, str) or not NUMBER_DTYPE.match(self.spec)
            or not self.plain_state or self.order not in BYTE_ORDERS
        ):
            raise FeatureFileError(
                f"{source}: refused to load: an array of dtype {self.spec!r}, not a plain "
                f"number type; expected float or integer arrays"
            )
        return np.dtype(self.spec).newbyteorder(self.order) if self.order in "<>" else np.dtype(self.spec)


class _Array:
    """`_reconstruct(ndarray, (0,), b'b')` followed by the array's state, recorded only."""

    valid_class = False
    state: Any = None

    def __init__(self, cls: Any = None, *_args: Any) -> None:
        self.valid_class = cls is _ARRAY_CLASS
        self.state = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 4:  # numpy's version-less form
            state = (1, *state)
        self.state = state


class _BufferArray(_Array):
    """Protocol 5's `_frombuffer(buffer, dtype, shape, order)`, recorded only."""

    def __init__(self, buffer: Any = None, dtype: Any = None, shape: Any = None, order: Any = "C") -> None:
        super().__init__(_ARRAY_CLASS)
        self.state = (1, shape, dtype, order == "F", buffer)


class _Scalar:
    """`scalar(dtype, bytes)`: a numpy scalar, recorded only."""

    dtype: Any = None
    data: Any = None

    def __init__(self, dtype: Any = None, data: Any = None) -> None:
        self.dtype, self.data = dtype, data


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> stand-in, under the numpy 1 and numpy 2 module names."""
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _ARRAY_CLASS, ("numpy", "dtype"): _Dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _Array
        allowed[(f"{package}.multiarray", "scalar")] = _Scalar
        # Protocol 5 pickles (Python >= 3.14's default) rebuild arrays from a buffer.
        allowed[(f"{package}.numeric", "_frombuffer")] = _BufferArray
    return allowed


class SafeArrayUnpickler(pickle.Unpickler):
    """An unpickler that yields dicts, lists, plain values and stand-ins for arrays."""

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


def scan_pickle(data: bytes, source: str) -> None:
    """Walk the opcodes without executing them: refuse lengths or memo indices the data
    cannot back (CPython's unpickler grows its memo to twice the largest index it is
    given, 8 bytes a slot: a 9-byte pickle naming slot 2**26 costs 1 GiB)."""
    try:
        for opcode, argument, _position in pickletools.genops(data):
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(argument) > len(data):
                raise FeatureFileError(
                    f"{source}: refused to load: a pickle memo index {argument} larger than "
                    f"the pickle itself ({len(data)} bytes)"
                )
            if opcode.name == "STOP":
                return
    except FeatureFileError:
        raise
    except Exception as error:  # pickletools' own "not enough bytes" and "unknown opcode"
        raise FeatureFileError(
            f"{source}: not a readable pickle of numpy arrays ({type(error).__name__}: {error})"
        ) from None


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle `data` into plain values and checked numpy arrays; `source` names it in errors."""
    scan_pickle(data, source)
    try:
        loaded = SafeArrayUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as error:
        raise FeatureFileError(
            f"{source}: not a readable pickle of numpy arrays ({type(error).__name__}: {error})"
        ) from error
    return _unwrap(loaded, source)


def _unwrap(loaded: Any, source: str) -> Any:
    """The value inside np.save's 0-d object wrapper, with its arrays built."""
    if isinstance(loaded, _Array) and _is_object_wrapper(loaded):
        loaded = loaded.state[4][0]
    if isinstance(loaded, dict):
        return {key: _materialise(value, source) for key, value in loaded.items()}
    return _materialise(loaded, source)


def _is_object_wrapper(array: _Array) -> bool:
    state = array.state
    return (
        array.valid_class and isinstance(state, tuple) and len(state) == 5
        and isinstance(state[2], _Dtype) and state[2].is_object
        and isinstance(state[4], list) and len(state[4]) == 1 and _shape(state[1]) in ((), (1,))
    )


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, tuple) and all(type(n) is int and n >= 0 for n in value):
        return value
    return None


def _materialise(value: Any, source: str) -> Any:
    """A recorded array or scalar built from its bytes once its dtype and size check out."""
    if isinstance(value, _Scalar):
        if not isinstance(value.dtype, _Dtype) or not isinstance(value.data, bytes):
            raise FeatureFileError(f"{source}: refused to load: a malformed numpy scalar")
        dtype = value.dtype.build(source)
        if len(value.data) != dtype.itemsize:
            raise FeatureFileError(f"{source}: refused to load: a numpy scalar of the wrong size")
        return np.frombuffer(value.data, dtype)[0]
    if not isinstance(value, _Array):
        return value
    state = value.state
    if state is None:  # numpy would hand out the memory `_reconstruct` allocated, unfilled
        raise FeatureFileError(f"{source}: refused to load: a numpy array whose data the file does not hold")
    if not value.valid_class or not isinstance(state, tuple) or len(state) != 5:
        raise FeatureFileError(f"{source}: refused to load: a malformed numpy array in its pickle")
    _version, shape, dtype, fortran, data = state
    if not isinstance(dtype, _Dtype):
        raise FeatureFileError(f"{source}: refused to load: a numpy array without a dtype")
    dtype = dtype.build(source)  # object dtypes stop here, before any array exists
    shape = _shape(shape)
    if shape is None or not isinstance(data, bytes | bytearray):
        raise FeatureFileError(f"{source}: refused to load: a malformed numpy array in its pickle")
    declared = math.prod(shape) * dtype.itemsize
    if declared != len(data):
        raise FeatureFileError(
            f"{source}: refused to load: an array of shape {shape} ({dtype}) needs "
            f"{declared} bytes, but the file holds {len(data)} for it"
        )
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _read_npy_header(handle: Any, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(handle)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(handle)
        raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as error:
        raise FeatureFileError(f"{source}: damaged .npy header ({error})") from error


def _check_plain_array(shape: tuple[int, ...], dtype: np.dtype, available: int, source: str) -> None:
    """Refuse a header whose array numpy would refuse or could not fill from `available` bytes."""
    if dtype.hasobject:
        raise FeatureFileError(
            f"{source}: refused to load: a .npy array of dtype {dtype} holds Python objects; "
            f"expected float or integer arrays"
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared > available:
        raise FeatureFileError(
            f"{source}: its .npy header declares an array of shape {shape} ({dtype}, "
            f"{declared} bytes), but only {available} bytes follow; damaged or forged"
        )


def read_feature_file(path: str | Path) -> Any:
    """The content of a `.npy` of a pickled object, a raw pickle or an `.npz` archive.

    Never runs code and never allocates more than the file's bytes could fill. A `.npy`
    of one plain array is refused (the TIM-Net files hold a dict), without reading it.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise InputNotFound(f"feature file not found: {source} (set dataset.path=FILE)")
    try:
        with path.open("rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                handle.seek(0)
                raw = handle.read()
                if zipfile.is_zipfile(io.BytesIO(raw)):
                    return _read_npz(raw, source)
                return safe_unpickle(raw, source)
            handle.seek(0)
            shape, _fortran, dtype = _read_npy_header(handle, source)
            if dtype == np.dtype(object):
                return safe_unpickle(handle.read(), source)
            _check_plain_array(shape, dtype, path.stat().st_size - handle.tell(), source)
    except OSError as error:
        raise FeatureFileError(f"{source}: cannot be read ({error.strerror or error})") from error
    raise FeatureFileError(
        f"{source}: holds a single array of shape {shape}; expected a dict "
        f"{{'x': (N, T, 39), 'y': (N, C)}} as the TIM-Net feature files hold"
    )


def _read_npz(raw: bytes, source: str) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` archive, each header checked against its member's size."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            for info in archive.infolist():
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise FeatureFileError(
                        f"{source}: member {info.filename} uses zip compression method "
                        f"{info.compress_type}; numpy writes stored or deflated members only"
                    )
                ratio = 1 if info.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO
                if info.file_size > ratio * info.compress_size + 1024:
                    raise FeatureFileError(
                        f"{source}: member {info.filename} declares {info.file_size} bytes, more "
                        f"than its {info.compress_size} compressed bytes can hold; damaged or forged"
                    )
                with archive.open(info) as member:
                    shape, _fortran, dtype = _read_npy_header(member, f"{source}:{info.filename}")
                    _check_plain_array(shape, dtype, info.file_size - member.tell(), source)
                with archive.open(info) as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
                arrays[info.filename.removesuffix(".npy")] = array
    except FeatureFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise FeatureFileError(f"{source}: a damaged .npz archive ({error})") from error
    return arrays
