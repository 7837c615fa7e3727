"""Feature extraction speed: our batched torchaudio MFCCs versus `librosa.feature.mfcc`.

    python -m benchmarks.bench_features files=500 [ssl=WAVLM_BASE_PLUS]

Writes N synthetic clips (EMODB's layout, 16 kHz like EMODB, 1.5-4 s) to a temporary
folder and times, on the same files in one run:

- end to end (read, resample to 22 050 Hz, fix the length, MFCC): our
  `CorpusDataModule.prepare_data` (no cache) against `librosa.load` + `librosa.feature.mfcc`
  one file at a time, as the reference did;
- the MFCC step alone on signals already in memory: our `extract_features` on the CPU
  (and on the GPU when there is one) against `librosa.feature.mfcc`.

It also prints the largest difference between the two feature matrices. A benchmark,
not a test: the figures depend on the machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

from ser.cli import parse_key_values, run_cli
from ser.data.datamodule import CorpusDataModule
from ser.data.feature_kinds import feature_settings
from ser.data.features import FeatureSettings, extract_features, fix_length
from ser.data.synthetic import EMOTION_LETTERS, SPEAKER_CODES, TEXT_CODES
from ser.errors import ConfigError


def write_clips(root: Path, count: int, sample_rate: int, seed: int) -> list[Path]:
    """`count` clips of harmonic tones in noise, named as EMODB files under root/wav."""
    limit = len(SPEAKER_CODES) * len(EMOTION_LETTERS) * len(TEXT_CODES) * 26
    if not 1 <= count <= limit:
        raise ConfigError(f"files={count}: expected 1..{limit} (unique EMODB-style file names)")
    rng = np.random.default_rng(seed)
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    letters = list(EMOTION_LETTERS.values())
    paths = []
    for i in range(count):
        speaker = SPEAKER_CODES[i % len(SPEAKER_CODES)]
        letter = letters[(i // len(SPEAKER_CODES)) % len(letters)]
        rest = i // (len(SPEAKER_CODES) * len(letters))
        text = TEXT_CODES[rest % len(TEXT_CODES)]
        version = "abcdefghijklmnopqrstuvwxyz"[rest // len(TEXT_CODES) % 26]
        seconds = rng.uniform(1.5, 4.0)
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        audio = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.1
        audio = audio + 0.01 * rng.standard_normal(t.size)
        path = wav_dir / f"{speaker}{text}{letter}{version}.wav"
        soundfile.write(path, audio.astype(np.float32), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def timed(function: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """(best wall-clock seconds over `repeats`, last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


USAGE = (
    "usage: python -m benchmarks.bench_features [files=300] [signal_length=96000] "
    "[sample_rate=16000] [threads=N] [load_threads=N] [seed=0] [ssl=MODEL]"
)


@dataclass
class BenchArguments:
    files: int = field(default=300, metadata={"help": "number of clips"})
    signal_length: int = field(default=96000, metadata={"help": "samples (EMODB: 96000)"})
    sample_rate: int = field(default=16000, metadata={"help": "rate the clips are written at"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (null: torch's)"})
    load_threads: int | None = field(
        default=None, metadata={"help": "files read in parallel (null: up to 4)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the clips"})
    ssl: str | None = field(
        default=None, metadata={"help": "also time features=ssl with this torchaudio bundle"}
    )


def ssl_rows(root: Path, model: str, signal_seconds: float, count: int) -> list[tuple[str, float]]:
    """Utterances per second of `features=ssl` with `model` (random weights) on the clips."""
    from ser.data import ssl_features

    weights = root / f"{model}.pt"
    torch.save(ssl_features.architecture(model).state_dict(), weights)
    features = {"kind": "ssl", "model": model, "weights": str(weights)}
    rows = []

    def end_to_end() -> torch.Tensor:
        module = CorpusDataModule(
            corpus="synthetic", root=str(root), features=features, cache_dir=None,
            signal_length=round(signal_seconds * 16000), feature_device="auto",
        )
        module.prepare_data()
        return module.features

    seconds, out = timed(end_to_end)
    device = "GPU" if torch.cuda.is_available() else "CPU"
    rows.append((f"ssl {model}, end to end (read + resample + model), {device}", count / seconds))
    settings = feature_settings(features, seconds=signal_seconds)
    waveforms = torch.randn(count, settings.signal_length) * 0.1
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        def model_only(device: str = device) -> torch.Tensor:
            out = settings.extract(waveforms, device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        model_only()
        seconds, _ = timed(model_only)
        rows.append((f"ssl {model}, model only, {device.upper()} ({tuple(out.shape[1:])} per utterance)", count / seconds))
    return rows


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.bench_features [key=value ...]`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    run_cli(lambda a: compare(parse_key_values(a, BenchArguments, USAGE)), argv)


def compare(args: Any) -> None:
    """Time both feature pipelines on the same generated clips and print the rates."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import librosa
    except ImportError:
        raise ConfigError("librosa is not installed: `make install-dev` (pip install -e '.[dev]')") from None

    settings = FeatureSettings(signal_length=args.signal_length)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-") as folder:
        root = Path(folder)
        paths = write_clips(root, args.files, args.sample_rate, args.seed)
        n = len(paths)

        # Warm both sides up (filter banks, windows, resampling kernels).
        warm = librosa.load(paths[0], sr=settings.sample_rate)[0]
        librosa.feature.mfcc(y=fix_length(warm, settings.signal_length), sr=settings.sample_rate, n_mfcc=39)
        extract_features(torch.zeros(2, settings.signal_length), settings)

        # -- end to end -------------------------------------------------------------------
        def ours_end_to_end() -> torch.Tensor:
            module = CorpusDataModule(
                corpus="synthetic", root=str(root), features=settings, cache_dir=None,
                feature_device="cpu", load_threads=args.load_threads,
            )
            module.prepare_data()
            return module.features

        def librosa_end_to_end() -> list[np.ndarray]:
            out = []
            for path in sorted(paths):
                y, _ = librosa.load(path, sr=settings.sample_rate)
                y = fix_length(y, settings.signal_length)
                out.append(librosa.feature.mfcc(y=y, sr=settings.sample_rate, n_mfcc=39).T)
            return out

        seconds, _ = timed(ours_end_to_end)
        rows.append(("ours, end to end (read + resample + MFCC), CPU", n / seconds))
        seconds, _ = timed(librosa_end_to_end)
        rows.append(("librosa, end to end (librosa.load + feature.mfcc)", n / seconds))

        # -- MFCC only, same signals in memory ----------------------------------------------
        signals = np.stack([
            fix_length(librosa.load(p, sr=settings.sample_rate)[0], settings.signal_length)
            for p in paths
        ]).astype(np.float32)
        waveforms = torch.from_numpy(signals)

        seconds, ours = timed(lambda: extract_features(waveforms, settings, device="cpu"), repeats=2)
        rows.append(("ours, MFCC only, CPU (batched torchaudio)", n / seconds))
        if torch.cuda.is_available():
            def on_gpu() -> torch.Tensor:
                out = extract_features(waveforms, settings, device="cuda")
                torch.cuda.synchronize()
                return out

            on_gpu()
            seconds, _ = timed(on_gpu, repeats=3)
            rows.append((f"ours, MFCC only, GPU ({torch.cuda.get_device_name()})", n / seconds))
            resident = waveforms.cuda()

            def on_gpu_resident() -> torch.Tensor:
                out = extract_features(resident, settings)
                torch.cuda.synchronize()
                return out

            on_gpu_resident()
            seconds, _ = timed(on_gpu_resident, repeats=3)
            rows.append(("ours, MFCC only, GPU, signals already on the GPU", n / seconds))

        def librosa_mfcc() -> np.ndarray:
            return np.stack([
                librosa.feature.mfcc(y=s, sr=settings.sample_rate, n_mfcc=39).T for s in signals
            ])

        seconds, reference = timed(librosa_mfcc)
        rows.append(("librosa, MFCC only (feature.mfcc per file)", n / seconds))
        difference = float(np.max(np.abs(ours.numpy() - reference)))
        if args.ssl:
            rows += ssl_rows(root, args.ssl, settings.signal_length / settings.sample_rate, n)

    print(
        f"{n} clips of 1.5-4 s at {args.sample_rate} Hz -> {settings.signal_length} samples at "
        f"{settings.sample_rate} Hz -> {settings.num_frames} x {settings.num_features} MFCC; "
        f"torch {torch.__version__} with {torch.get_num_threads()} CPU thread(s), "
        f"librosa {librosa.__version__}"
    )
    width = max(len(name) for name, _ in rows)
    for name, rate in rows:
        print(f"  {name:<{width}}  {rate:10.1f} utterances/s")
    print(f"  largest |ours - librosa| over all MFCCs (pad_mode constant): {difference:.2e}")


if __name__ == "__main__":
    main()
