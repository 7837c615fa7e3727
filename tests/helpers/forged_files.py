"""Forged feature files, written opcode by opcode: what an attacker, not numpy, would write.

Each pickle here uses only the globals a real `np.save` of a dict uses (numpy's dtype,
ndarray and `_reconstruct`), so a restricted unpickler that checks names alone lets it
through. The payloads abuse the arguments instead: an object dtype whose flags say it
holds no objects (numpy then copies raw bytes in as pointers), a shape numpy allocates
before any check, a memo index the unpickler allocates for, a `.npy` header that
declares terabytes.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

# np.save writes these globals (numpy 2 module names; numpy.core is accepted too).
RECONSTRUCT = b"cnumpy._core.multiarray\n_reconstruct\n"
SCALAR = b"cnumpy._core.multiarray\nscalar\n"
NDARRAY = b"cnumpy\nndarray\n"
DTYPE = b"cnumpy\ndtype\n"
POINTER = struct.pack("<Q", 0xDEADBEEF)  # where a forged object array would point


def text(value: str) -> bytes:
    """BINUNICODE."""
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def raw(data: bytes) -> bytes:
    """BINBYTES."""
    return b"B" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    """BININT (32-bit signed)."""
    return b"J" + struct.pack("<i", value)


def dtype(spec: str, order: str = "|", flags: int = 0, fields: bytes = b"N") -> bytes:
    """`numpy.dtype(spec, False, True)` then BUILD with a state whose flags are `flags`.

    numpy trusts the flags word of the state: an object dtype ("O8") with flags 0 does
    not say it holds references, so numpy treats its items as plain bytes.
    """
    state = b"(" + integer(3) + text(order) + b"N" + fields + b"N" + integer(-1) + integer(-1) + integer(flags) + b"t"
    return DTYPE + text(spec) + b"\x89\x88\x87R" + state + b"b"


def array(shape: tuple[int, ...], dtype_ops: bytes, data_ops: bytes) -> bytes:
    """`_reconstruct(ndarray, (0,), b'b')` then BUILD with (1, shape, dtype, False, data)."""
    shape_ops = b"(" + b"".join(integer(n) for n in shape) + b"t"
    return (
        RECONSTRUCT + NDARRAY + integer(0) + b"\x85" + raw(b"b") + b"\x87R"
        + b"(" + integer(1) + shape_ops + dtype_ops + b"\x89" + data_ops + b"tb"
    )


def pickle_of(*ops: bytes) -> bytes:
    return b"\x80\x03" + b"".join(ops) + b"."


def shared_dict(x_ops: bytes, y_ops: bytes) -> bytes:
    """A dict {'x': ..., 'y': ...} in np.save's 0-d object wrapper, as the real files."""
    inner = b"}(" + text("x") + x_ops + text("y") + y_ops + b"u"
    return array((), dtype("O8", flags=63), b"]" + inner + b"a")


def float_array(shape: tuple[int, ...]) -> bytes:
    count = int(np.prod(shape))
    return array(shape, dtype("f4", "<"), raw(np.zeros(count, "<f4").tobytes()))


# -- the forgeries ----------------------------------------------------------------------
def forged_object_array() -> bytes:
    """A 1-element object array over 8 raw bytes: a pointer to 0xdeadbeef (segfault when read)."""
    return pickle_of(array((1,), dtype("O8", flags=0), raw(POINTER)))


def object_x_in_dict() -> bytes:
    """The real files' layout, with 'x' an object array over raw bytes."""
    return pickle_of(shared_dict(array((1,), dtype("O8", flags=0), raw(POINTER)), float_array((1, 7))))


def object_field() -> bytes:
    """A structured dtype with an object field, flags 0: the same pointer, one level down."""
    fields = b"}" + text("a") + DTYPE + text("O8") + b"\x89\x88\x87R" + integer(0) + b"\x86s"
    names = b"(" + text("a") + b"t"
    state = b"(" + integer(3) + text("|") + b"N" + names + fields + integer(8) + integer(1) + integer(0) + b"t"
    forged = DTYPE + text("V8") + b"\x89\x88\x87R" + state + b"b"
    return pickle_of(array((1,), forged, raw(POINTER)))


def object_scalar() -> bytes:
    """`scalar(dtype('O'), bytes)`: a numpy scalar over a forged pointer."""
    return pickle_of(SCALAR + dtype("O8", flags=0) + raw(POINTER) + b"\x86R")


def allocation_bomb(elements: int = 1_350_000_000) -> bytes:
    """The real files' dict whose 'x' is `_reconstruct(ndarray, (elements,), b'b')`: numpy
    allocates `elements` bytes for it at once, and with no state to follow, returns them."""
    bomb = RECONSTRUCT + NDARRAY + integer(elements) + b"\x85" + raw(b"b") + b"\x87R"
    return pickle_of(shared_dict(bomb, float_array((1, 7))))


def memo_bomb(index: int = 0x0400_0000) -> bytes:
    """A memo index that makes CPython's unpickler allocate 16 bytes per slot up to it."""
    return b"\x80\x03N" + b"r" + struct.pack("<I", index) + b"."


def npy_container(payload: bytes) -> bytes:
    """`payload` as the pickle of a `.npy` object array, as np.save writes it."""
    return npy_header("|O", ()) + payload


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def huge_npy_header() -> bytes:
    """A `.npy` header declaring 4 TiB of float32, followed by 16 bytes."""
    return npy_header("<f4", (1 << 40,)) + b"\x00" * 16


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- audio headers ----------------------------------------------------------------------
def _pcm_wav(path: Path, frames: int = 1600) -> bytearray:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    signal = (0.1 * np.sin(np.arange(frames) / 5.0)).astype(np.float32)
    soundfile.write(str(path), signal, 16000, subtype="PCM_16")
    return bytearray(path.read_bytes())


def wav_with_rate(path: Path, rate: int) -> Path:
    """A valid 16-bit WAV whose fmt chunk declares `rate` Hz (and the matching byte rate)."""
    data = _pcm_wav(path)
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", 2 * rate)
    return write(path, bytes(data))


def wav_with_channels(path: Path, channels: int) -> Path:
    """A valid 16-bit WAV whose fmt chunk declares `channels` channels."""
    data = _pcm_wav(path)
    data[22:24] = struct.pack("<H", channels)
    return write(path, bytes(data))


def flac_with_frames(path: Path, frames: int = (1 << 36) - 1, channels: int = 1, rate: int = 16000) -> Path:
    """A FLAC of 16000 samples per channel whose STREAMINFO declares `frames` (36 bits):
    decoding would allocate that many before reading any."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wave = (0.1 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    soundfile.write(str(path), np.repeat(wave[:, None], channels, axis=1), rate, format="FLAC")
    data = bytearray(path.read_bytes())
    # STREAMINFO follows "fLaC" and a 4-byte block header; bytes 10..17 of it end with
    # the 36-bit total-samples field.
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | frames
    data[18:26] = packed.to_bytes(8, "big")
    return write(path, bytes(data))


# -- where a regression could crash or exhaust memory ------------------------------------
# Run after the imports: the address space they reserve, plus this much, is all the
# child may map, so an allocation a forged file asks for fails at once (a traceback, not
# exit code 2) instead of taking the machine's memory.
HEADROOM = 2 * 2**30


def limit_memory(headroom: int = HEADROOM) -> None:
    """Let this process map only what it has mapped now plus `headroom` bytes."""
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, resource.RLIM_INFINITY))


def run_isolated(imports: str, call: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`run_cli(call, argv[1])` in a child process with its memory limited after `imports`.

    A segfault there is exit code 139 and an over-allocation a MemoryError traceback:
    failing exit codes, not a dead or starved test session.
    """
    script = (
        f"import sys\nfrom ser.cli import run_cli\nfrom tests.helpers.forged_files import limit_memory\n"
        f"{imports}\nlimit_memory()\nrun_cli({call}, sys.argv[1])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=Path(__file__).resolve().parents[2],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
