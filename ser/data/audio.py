"""Reading one audio file: mono float32 at the feature sample rate, with clear errors."""

from __future__ import annotations

import functools
import math
import os
import stat
import struct
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from ser.errors import InputError, InputNotFound

SILENCE_PEAK = 1e-4
# What a header may declare before anything is allocated for it. Corpora are recorded at
# 8-48 kHz; 384 kHz is the highest rate audio interfaces offer. A FLAC or OGG header
# states its frame count, and decoding allocates that many samples up front.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64
MAX_SECONDS = 3600.0
# The samples one file may decode to (per channel, mixed to mono as they are read): 1 GiB
# as float32, an hour at 74.5 kHz. A header's frame count is only a promise: the samples
# are read in blocks, so memory follows what the file holds, never what it declares.
MAX_SAMPLES = 2**28
READ_BLOCK = 2**20
# Polyphase resampling builds a (new / g) x (orig / g + 2 * width) kernel, g = gcd of
# the rates: for 44.1/48/16/8 kHz and 22.05 kHz a few hundred thousand values; for a
# rate prime to the target (1 000 003 Hz), billions.
MAX_RESAMPLING_KERNEL = 2**23
# resampy's kaiser_best (see _resampler).
LOWPASS_FILTER_WIDTH = 64
ROLLOFF = 0.9475937167399596
KAISER_BETA = 14.769656459379492


class AudioFileError(InputError):
    """A file that should hold audio cannot be used: unreadable, not audio, truncated or empty."""


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Read ``path`` as a mono float32 signal in [-1, 1] at ``sample_rate`` Hz.

    Multi-channel audio is averaged to mono. Other sample rates are resampled with a
    Kaiser-windowed sinc in torchaudio (see :func:`_resampler`).

    Raises ``FileNotFoundError`` for a missing file and :class:`AudioFileError` for
    every other read failure: a file that cannot be opened (permission, a directory),
    is not decodable audio, is truncated, declares an absurd header (see
    :func:`check_header`), holds no samples or holds non-finite values.
    """
    path = Path(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not path.exists():
        raise InputNotFound(f"audio file not found: {path}")
    special = special_file(path)
    if special is not None:  # opening it would block (a FIFO) or never end (a device)
        raise AudioFileError(f"{path}: {special}, not a regular file; expected an audio file")
    try:
        _check_wav_not_truncated(path)
        with soundfile.SoundFile(str(path)) as audio:
            check_header(path, audio.samplerate, audio.channels, audio.frames, sample_rate)
            signal = _read_mono(path, audio)
        file_rate = audio.samplerate
    except OSError as error:
        raise AudioFileError(f"{path}: cannot be read ({error.strerror or error})") from error
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise AudioFileError(
            f"{path}: expected an audio file readable by libsndfile (WAV, FLAC, OGG, ...), "
            f"but it could not be decoded ({error})"
        ) from error
    if signal.shape[0] == 0:
        raise AudioFileError(f"{path}: expected audio samples, but the file holds none")
    if file_rate != sample_rate:
        with torch.no_grad():
            signal = _resampler(file_rate, sample_rate)(torch.from_numpy(signal)).numpy()
    return np.ascontiguousarray(signal, dtype=np.float32)


def special_file(path: Path) -> str | None:
    """What `path` is when it is a FIFO, a device or a socket (None for files, folders, or
    what cannot be examined: reading it then says why)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), None)


def _read_mono(path: Path, audio: soundfile.SoundFile) -> np.ndarray:
    """The file's samples mixed to mono, read in blocks (never more than MAX_SAMPLES)."""
    blocks, total = [], 0
    while True:
        data = audio.read(READ_BLOCK, dtype="float32", always_2d=True)
        if data.shape[0] == 0:
            break
        if not np.all(np.isfinite(data)):  # per block, before the channels are mixed
            raise AudioFileError(f"{path}: expected finite audio samples, found NaN or infinity")
        total += data.shape[0]
        if total > MAX_SAMPLES:
            raise AudioFileError(
                f"{path}: more than {MAX_SAMPLES} samples per channel, beyond what its header declares; "
                f"damaged or forged"
            )
        blocks.append(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if len(blocks) == 1:
        return np.ascontiguousarray(blocks[0])
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def check_header(
    path: Path, file_rate: int, channels: int, frames: int, sample_rate: int | None = None
) -> None:
    """Refuse a header whose rate, channels or length no recording has, before decoding
    or resampling allocates for it; `sample_rate`: the rate it will be resampled to."""
    if not MIN_SAMPLE_RATE <= file_rate <= MAX_SAMPLE_RATE:
        raise AudioFileError(
            f"{path}: expected a sample rate of {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, but "
            f"its header declares {file_rate} Hz; damaged or forged"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioFileError(
            f"{path}: expected 1..{MAX_CHANNELS} channels, but its header declares {channels}"
        )
    if frames / file_rate > MAX_SECONDS:
        raise AudioFileError(
            f"{path}: expected at most {MAX_SECONDS:.0f} s of audio, but its header declares "
            f"{frames} frames ({frames / file_rate:.0f} s at {file_rate} Hz); damaged or forged"
        )
    if frames > MAX_SAMPLES:
        raise AudioFileError(
            f"{path}: its header declares {channels} channel(s) x {frames} frames ({frames / file_rate:.0f} s at "
            f"{file_rate} Hz), {frames * channels * 4 / 2**30:.1f} GiB to decode; expected at most {MAX_SAMPLES} "
            f"frames (1 GiB as float32): cut the recording into utterances"
        )
    if sample_rate is not None and file_rate != sample_rate:
        common = math.gcd(file_rate, sample_rate)
        new, orig = sample_rate // common, file_rate // common
        # torchaudio's kernel width for these settings (_get_sinc_resample_kernel).
        width = math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(new, orig) * ROLLOFF))
        if new * (orig + 2 * width) > MAX_RESAMPLING_KERNEL:
            raise AudioFileError(
                f"{path}: resampling its {file_rate} Hz to {sample_rate} Hz would need a "
                f"{new} x {orig + 2 * width} kernel; expected a common sample rate "
                f"(e.g. 16000, 44100 or 48000 Hz)"
            )


@functools.lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    """A cached Kaiser-sinc resampler with the parameters of resampy's ``kaiser_best``.

    The reference loaded files with librosa 0.8.1, whose default resampler was resampy's
    kaiser_best (librosa >= 0.10 uses soxr_hq). torchaudio's default (Hann window, width
    6) leaks enough above the old Nyquist that, on 16 kHz corpora read at 22.05 kHz, the
    otherwise empty top mel bands move MFCCs by ~30. With these settings the remaining
    differences sit in the 7-8 kHz transition band: max |MFCC| difference ~1 against
    soxr_hq and ~6 against resampy's kaiser_best, measured on 16 kHz generated speech.
    Caching the kernel makes a short file ~10x faster than the functional form.
    """
    return torchaudio.transforms.Resample(
        orig_rate,
        new_rate,
        resampling_method="sinc_interp_kaiser",
        lowpass_filter_width=LOWPASS_FILTER_WIDTH,
        rolloff=ROLLOFF,
        beta=KAISER_BETA,
    )


def is_silent(signal: np.ndarray, threshold: float = SILENCE_PEAK) -> bool:
    """Whether the signal's peak magnitude stays below ``threshold`` (empty counts as silent)."""
    return signal.size == 0 or float(np.max(np.abs(signal))) < threshold


def _check_wav_not_truncated(path: Path) -> None:
    """Raise if a RIFF/WAVE header promises more audio bytes than the file holds.

    libsndfile silently decodes what is there, so a download cut short would otherwise
    pass as a shorter utterance. Other formats are left to libsndfile.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        offset = 12
        for _ in range(64):  # a handful of chunks precede the data in practice
            chunk = handle.read(8)
            if len(chunk) < 8:
                return  # libsndfile reports the missing data chunk itself
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            offset += 8
            if chunk_id == b"data":
                available = size - offset
                # 0 and 0xFFFFFFFF are placeholders written by streaming encoders.
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise AudioFileError(
                        f"{path}: expected {chunk_size} bytes of audio data as its WAV header "
                        f"declares, but the file holds only {available}; it looks truncated"
                    )
                return
            offset += chunk_size + (chunk_size & 1)  # chunks are word-aligned
            handle.seek(offset)
