"""Training and inference speed of MS-SENet and TIM-Net, reference against fast implementation.

    python -m benchmarks.bench out=bench.json

In one run, at the paper's input shape by default (batch 64, 188 frames x 39, 10 TABs for
MS-SENet, 8 for TIM-Net, 7 classes), for each model and implementation:

- training samples/s: forward, backward and Adam step in train mode (dropout on), the
  median step time over timed steps after warm-up; reference and fast steps alternate in
  rounds so both see the same machine load, and `speedup` is their ratio;
- FLOPs of one training step (`torch.utils.flop_counter.FlopCounterMode`): "model" FLOPs
  are those of the reference implementation (the network's nominal work, the same for
  every implementation), "executed" those the implementation itself runs; achieved
  GFLOP/s = model FLOPs / step time, compared with an fp32 matmul peak measured here;
- peak memory of a training step: on CPU the growth of the peak resident set during one
  step in a fresh subprocess, on CUDA `torch.cuda.max_memory_allocated`;
- inference (eval mode, no autograd): latency for one 3-second clip (130 frames at
  22 050 Hz, hop 512) and throughput at the training batch size;
- fold stacking (`stacked=10` folds, 0 for none): a training step of every fold, the
  folds' networks one after another against the same networks stacked as one
  (ser.models.stacked), in samples/s and their ratio (benchmarks/bench_stacked.py). The
  demo's shape: `python -m benchmarks.bench batch_size=16 frames=65`.

On a GPU (`device=cuda`) the same rows are measured with CUDA synchronisation around
each step; `precision=bf16` runs forward and loss under bf16 autocast (weights, Adam
and BatchNorm statistics stay float32, as Lightning's `bf16-mixed`), and `compile=MODE`
times `torch.compile(model, mode=MODE)` (e.g. reduce-overhead: CUDA graphs) after its
compilation, which is timed apart. `python -m benchmarks.gpu_check` runs the GPU set.

`folds=true` times something else: the default demo's 10-fold training, its folds
stacked in one Trainer (`cv.stack=true`) against one fold after another, for `epochs`
epochs (benchmarks.bench_folds).

The figures depend on the machine and on its load: run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import child_environment
from benchmarks.bench_folds import fold_benchmark, print_fold_table
from benchmarks.bench_report import load_average, native_kernels, print_table, processor_name
from benchmarks.bench_stacked import print_stacking, time_stacking
from benchmarks.bench_step import (
    IMPLEMENTATIONS,
    MODELS,
    NUM_CLASSES,
    PRECISIONS,
    Trainer,
    autocast_context,
    matmul_peak,
    synchronise,
)
from ser.cli import parse_key_values, run_cli
from ser.errors import ConfigError
from ser.training.module import COMPILE_MODES

SAMPLE_RATE, HOP_LENGTH = 22_050, 512


def clip_frames(seconds: float) -> int:
    """Frames of a centred STFT (librosa's default) over `seconds` of audio."""
    return 1 + int(seconds * SAMPLE_RATE) // HOP_LENGTH


def time_training(
    trainers: dict[str, Trainer], steps: dict[str, int], warmup: dict[str, int]
) -> None:
    """Warm up each trainer, then alternate their timed steps in rounds."""
    for name, trainer in trainers.items():
        for _ in range(warmup[name]):
            trainer.step()
    rounds = max(1, min(steps.values()))
    done = dict.fromkeys(trainers, 0)
    for r in range(rounds):
        for name, trainer in trainers.items():
            target = math.ceil(steps[name] * (r + 1) / rounds)
            while done[name] < target:
                trainer.timed_step()
                done[name] += 1


def inference_timing(
    model: nn.Module, device: torch.device, frames: int, batch: int, runs: int,
    precision: str = "32",
) -> float:
    """Median seconds of one eval-mode forward pass at (batch, frames, 39)."""
    model.eval()
    x = torch.randn(batch, frames, 39, device=device)
    times = []
    with torch.inference_mode(), autocast_context(device, precision)():
        model(x)
        for _ in range(runs):
            synchronise(device)
            start = time.perf_counter()
            model(x)
            synchronise(device)
            times.append(time.perf_counter() - start)
    model.train()
    return statistics.median(times)


def _read_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _probe_memory(model: str, implementation: str, args: Any) -> float:
    """Peak resident growth (MiB) of one training step, measured in this (fresh) process."""
    import resource

    device = torch.device("cpu")
    trainer = Trainer(model, implementation, args, device)
    before = _read_status_kib("VmRSS")
    try:  # reset the peak resident set (VmHWM) to the current size (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        resettable = _read_status_kib("VmHWM") is not None
    except OSError:
        resettable = False
    if not resettable:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.step()
    if resettable:
        peak = _read_status_kib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0, peak - before) / 1024


def peak_memory_mib(
    model: str, implementation: str, args: Any, device: torch.device
) -> float | None:
    if args.compile or not args.memory:
        return None  # not asked for, or a fresh compiled model would compile again
    if device.type == "cuda":
        trainer = Trainer(model, implementation, args, device)
        trainer.step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        trainer.step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    command = [
        sys.executable, "-m", "benchmarks.bench", f"probe_memory={model}:{implementation}",
        f"batch_size={args.batch_size}", f"frames={args.frames}",
    ]
    if args.threads:
        command.append(f"threads={args.threads}")
    if args.num_blocks:
        command.append(f"num_blocks={args.num_blocks}")
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, check=True, env=child_environment()
        )
        return float(result.stdout.strip().splitlines()[-1])
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return None


def run(args: Any) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak(device)
    results: dict = {
        "config": {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "frames": args.frames,
            "precision": args.precision,
            "compile": args.compile,
            "features": 39,
            "classes": NUM_CLASSES,
            "num_blocks": args.num_blocks or {"mssenet": 10, "timnet": 8},
            "steps": args.steps,
            "reference_steps": args.reference_steps,
            "warmup": args.warmup,
            "clip_seconds": args.clip_seconds,
            "clip_frames": clip_frames(args.clip_seconds),
            "stacked_folds": args.stacked,
            "stacked_rounds": args.stacked_rounds,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "processor": processor_name(),
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "load_average_at_start": load_average(),
            # the fused C kernels of the fast implementation (None: PyTorch formulation)
            "native_kernels": native_kernels(),
        },
        "matmul_peak_gflops": peak,
        "models": {},
    }
    for model in args.models:
        trainers = {impl: Trainer(model, impl, args, device) for impl in args.implementations}
        flops = {impl: trainer.count_flops() for impl, trainer in trainers.items()}
        if "reference" not in flops:  # the network's nominal work is the reference's
            flops["reference"] = Trainer(model, "reference", args, device).count_flops()
        for trainer in trainers.values():
            if args.compile:
                trainer.compile_step()
        # the reference MS-SENet takes seconds per step on a CPU
        slow = model == "mssenet" and device.type == "cpu"
        steps = {
            "reference": args.reference_steps if slow else args.steps,
            "fast": args.steps,
        }
        warmup = {"reference": max(0, args.warmup - 1) if slow else args.warmup, "fast": args.warmup}
        time_training(trainers, steps, warmup)
        for impl, trainer in trainers.items():
            step_time = statistics.median(trainer.times)
            latency = throughput_time = math.nan
            if not args.compile:  # eval mode and other shapes would compile again
                latency = inference_timing(
                    trainer.model, device, clip_frames(args.clip_seconds), 1, args.inference_runs,
                    args.precision,
                )
                throughput_time = inference_timing(
                    trainer.model, device, args.frames, args.batch_size,
                    max(3, args.inference_runs // (4 if impl == "reference" else 2)), args.precision,
                )
            results["models"][f"{model}/{impl}"] = {
                "model": model,
                "implementation": impl,
                "precision": args.precision,
                "compile": args.compile,
                "compile_seconds": trainer.compile_seconds,
                "train_samples_per_s": args.batch_size / step_time,
                "train_step_ms_median": 1e3 * step_time,
                "train_step_ms_min": 1e3 * min(trainer.times),
                "timed_steps": len(trainer.times),
                "model_gflop_per_step": flops["reference"] / 1e9,
                "executed_gflop_per_step": flops[impl] / 1e9,
                "achieved_gflops": flops["reference"] / step_time / 1e9,
                "executed_gflops": flops[impl] / step_time / 1e9,
                "fraction_of_matmul_peak": flops["reference"] / step_time / 1e9 / peak,
                "system_seconds_per_step": trainer.system_seconds / len(trainer.times),
                "minor_page_faults_per_step": trainer.minor_faults / len(trainer.times),
                "peak_memory_mib": peak_memory_mib(model, impl, args, device),
                "inference_latency_ms": None if math.isnan(latency) else 1e3 * latency,
                "inference_samples_per_s": (
                    None if math.isnan(throughput_time) else args.batch_size / throughput_time
                ),
            }
        del trainers
    rows = results["models"]
    for model in args.models:
        fast, reference = rows.get(f"{model}/fast"), rows.get(f"{model}/reference")
        if fast is None or reference is None:
            continue
        fast["speedup"] = fast["train_samples_per_s"] / reference["train_samples_per_s"]
        reference["speedup"] = 1.0
    if args.stacked and not args.compile:  # a compiled step would compile every fold's copy
        results["stacked"] = {model: time_stacking(model, args, device) for model in args.models}
        results["stacked_ratio"] = results["stacked"].get("mssenet", {}).get("ratio")
    results["environment"]["load_average_at_end"] = load_average()
    # fast over reference (the README's figures); absent when one of them was not run
    results["speedup"] = rows.get("mssenet/fast", {}).get("speedup")
    results["timnet_speedup"] = rows.get("timnet/fast", {}).get("speedup")
    return results


USAGE = (
    "usage: python -m benchmarks.bench [out=bench.json] [device=cpu|cuda] [batch_size=64] "
    "[frames=188] [precision=32|bf16] [compile=reduce-overhead] [models=[mssenet,timnet]] ... | "
    "folds=true [epochs=3] [device=cpu|cuda] [out=bench-folds.json]"
)


@dataclass
class BenchArguments:
    out: str | None = field(default=None, metadata={"help": "write the results as JSON"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N"})
    batch_size: int = field(default=64, metadata={"help": "samples per training step"})
    frames: int = field(default=188, metadata={"help": "frames per training sample"})
    steps: int = field(default=12, metadata={"help": "timed training steps"})
    reference_steps: int = field(
        default=3, metadata={"help": "timed steps of the reference MS-SENet on a CPU (slow)"}
    )
    warmup: int = field(default=2, metadata={"help": "untimed steps before timing"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (null: torch's)"})
    num_blocks: int | None = field(default=None, metadata={"help": "TABs (null: 10 / 8)"})
    clip_seconds: float = field(default=3.0, metadata={"help": "clip of the latency figure"})
    inference_runs: int = field(default=20, metadata={"help": "timed inference passes"})
    models: list[str] = field(default_factory=lambda: list(MODELS), metadata={"help": "networks to time"})
    implementations: list[str] = field(
        default_factory=lambda: list(IMPLEMENTATIONS),
        metadata={"help": "implementations to time (the speedup needs both)"},
    )
    precision: str = field(
        default="32", metadata={"help": "32: float32; bf16: forward and loss under bf16 autocast"}
    )
    compile: str | None = field(
        default=None, metadata={"help": "time torch.compile(model, mode=...) after compiling it"}
    )
    memory: bool = field(
        default=True, metadata={"help": "peak-memory figures (on a CPU each is a fresh subprocess)"}
    )
    stacked: int = field(
        default=10, metadata={"help": "folds of the stacked-against-sequential timing (0: none)"}
    )
    stacked_rounds: int = field(default=3, metadata={"help": "timed steps of each side of it"})
    probe_memory: str | None = field(
        default=None, metadata={"help": "internal: MODEL:IMPLEMENTATION, one memory probe"}
    )
    folds: bool = field(
        default=False,
        metadata={"help": "time the default demo's 10-fold training, stacked against one fold after another"},
    )
    epochs: int = field(default=3, metadata={"help": "folds=true: epochs of each cross-validation"})
    rounds: int = field(default=1, metadata={"help": "folds=true: runs of each way, alternating"})
    overrides: list[str] = field(
        default_factory=list, metadata={"help": "folds=true: train.py settings added to both ways"}
    )


def check_arguments(args: Any) -> Any:
    """The arguments, or a ValueError naming the one that cannot be used."""
    for name in (
        "batch_size", "frames", "steps", "reference_steps", "inference_runs", "stacked_rounds", "epochs", "rounds",
    ):
        if getattr(args, name) < 1:
            raise ConfigError(f"{name}={getattr(args, name)}: expected a whole number >= 1")
    for name in ("warmup", "stacked"):
        if getattr(args, name) < 0:
            raise ConfigError(f"{name}={getattr(args, name)}: expected a whole number >= 0")
    for name, allowed in (("models", MODELS), ("implementations", IMPLEMENTATIONS)):
        unknown = [value for value in getattr(args, name) if value not in allowed]
        if unknown or not getattr(args, name):
            raise ConfigError(f"{name}={list(getattr(args, name))}: expected some of {list(allowed)}")
    if args.precision not in PRECISIONS:
        raise ConfigError(f"precision={args.precision}: expected one of {list(PRECISIONS)}")
    if args.compile is not None and args.compile not in COMPILE_MODES:
        raise ConfigError(f"compile={args.compile}: expected null or one of {list(COMPILE_MODES)}")
    if args.precision == "bf16" and "fast" in args.implementations:
        raise ConfigError("precision=bf16: the fast implementation computes in float32 only; "
                         "give implementations=[reference]")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={args.device}: no CUDA device is available")
    return args


def benchmark(args: Any) -> dict | None:
    """Run the benchmark the arguments describe, print its table, write `out`."""
    if args.probe_memory:
        if args.threads:
            torch.set_num_threads(args.threads)
        model, implementation = args.probe_memory.split(":")
        print(_probe_memory(model, implementation, args))
        return None
    if args.folds:
        results = fold_benchmark(args)
        print_fold_table(results)
    else:
        results = run(args)
        print_table(results)
        if results.get("stacked"):
            print_stacking(results["stacked"])
    if args.out is not None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> dict | None:
    """`python -m benchmarks.bench [key=value ...]`; a bad argument is one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(
        lambda a: benchmark(check_arguments(parse_key_values(a, BenchArguments, USAGE))), argv
    )


if __name__ == "__main__":
    main()
