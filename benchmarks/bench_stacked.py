"""Fold stacking's training step in `python -m benchmarks.bench`: F folds stacked against
the same F folds' networks trained one after another.

Both sides hold F networks of one model and implementation (those `auto` picks for the
device: fast on CPUs, reference on GPUs), each with its own batch of the bench's size.
A sequential step trains each fold's network alone: seeded as a run seeds a fold's batch
(ser.training.resume.EpochSeeding), forward, loss, backward and its own Adam step (the
project's settings). A stacked step trains copies of the same networks as one
`StackedNetworks` with the same seeds and one Adam over all their parameters (Adam is
elementwise: the same update). Steps alternate in rounds, so both see the same machine
load; samples/s counts all folds' samples, and `ratio` is stacked over sequential.

    python -m benchmarks.bench_stacked [batches=[1,4,16,32]] [folds=10] [threads=2] [out=F]

splits each way's step time into a cost per step and a cost per sample: both ways are
timed at several batch sizes (the demo's shape otherwise, 65 frames), and a line fitted
to step time against batch size gives the fixed milliseconds of a step of all folds
(intercept) and the milliseconds each batch row of all folds adds (slope). Stacking can
only remove the first; `bound` is the ratio a stacked step with no fixed cost would reach.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.bench_step import NUM_CLASSES, autocast_context, build_model, synchronise
from ser.cli import parse_key_values, run_cli
from ser.errors import ConfigError
from ser.models.stacked import StackedNetworks
from ser.training.implementation import resolve_implementation


def _adam(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=1e-3, betas=(0.93, 0.98), eps=1e-8, fused=True)


class FoldSteps:
    """F folds' networks, optimisers and batches, trained one after another or stacked."""

    def __init__(self, model: str, implementation: str, args: Any, device: torch.device, folds: int) -> None:
        torch.manual_seed(0)
        nets = [
            build_model(model, implementation, args.num_blocks).to(device).train()
            for _ in range(folds)
        ]
        self.device, self.folds = device, folds
        self.autocast = autocast_context(device, args.precision)
        self.nets = nets
        self.optimizers = [_adam(net.parameters()) for net in nets]
        self.stacked = StackedNetworks(copy.deepcopy(nets)).to(device).train()
        self.stacked_optimizer = _adam(self.stacked.parameters())
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(folds, args.batch_size, args.frames, 39, generator=generator)
        y = torch.randint(0, NUM_CLASSES, (folds, args.batch_size), generator=generator)
        self.x, self.y = x.to(device), y.to(device)
        self.seeds = list(range(folds))
        self.times: dict[str, list[float]] = {"sequential": [], "stacked": []}

    def sequential(self) -> None:
        for fold, (net, optimizer) in enumerate(zip(self.nets, self.optimizers, strict=True)):
            optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(self.seeds[fold])
            with self.autocast():
                logits = net(self.x[fold])
                loss = nn.functional.cross_entropy(logits.float(), self.y[fold], label_smoothing=0.1)
            loss.backward()
            optimizer.step()

    def stacked_step(self) -> None:
        self.stacked_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.stacked(self.x, range(self.folds), self.seeds)
            # the sum of the folds' mean losses: each fold's gradient as it has alone
            losses = nn.functional.cross_entropy(
                logits.float().flatten(0, 1), self.y.flatten(), label_smoothing=0.1, reduction="none"
            )
            loss = losses.view(self.folds, -1).mean(1).sum()
        loss.backward()
        self.stacked_optimizer.step()

    def timed(self, name: str) -> None:
        step = self.sequential if name == "sequential" else self.stacked_step
        synchronise(self.device)
        start = time.perf_counter()
        step()
        synchronise(self.device)
        self.times[name].append(time.perf_counter() - start)


def time_stacking(model: str, args: Any, device: torch.device) -> dict:
    """Samples/s of `args.stacked` folds trained one after another and stacked, one run."""
    precision = "bf16-mixed" if args.precision == "bf16" else "32-true"
    implementation = resolve_implementation("auto", device.type, precision)
    steps = FoldSteps(model, implementation, args, device, args.stacked)
    for _ in range(max(1, args.warmup)):  # the first steps allocate and build
        steps.sequential()
        steps.stacked_step()
    for _ in range(args.stacked_rounds):
        steps.timed("sequential")
        steps.timed("stacked")
    samples = args.stacked * args.batch_size
    medians = {name: statistics.median(times) for name, times in steps.times.items()}
    return {
        "model": model,
        "implementation": implementation,
        "folds": args.stacked,
        "rounds": args.stacked_rounds,
        "sequential_step_ms": 1e3 * medians["sequential"],
        "stacked_step_ms": 1e3 * medians["stacked"],
        "sequential_samples_per_s": samples / medians["sequential"],
        "stacked_samples_per_s": samples / medians["stacked"],
        "ratio": medians["sequential"] / medians["stacked"],
    }


def print_stacking(rows: dict) -> None:
    """The stacked-against-sequential rows as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Fold stacking: one training step of every fold")
    headers = ("model", "impl", "folds", "sequential ms", "stacked ms",
               "sequential samples/s", "stacked samples/s", "ratio")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in rows.values():
        table.add_row(
            row["model"], row["implementation"], str(row["folds"]),
            f"{row['sequential_step_ms']:.0f}", f"{row['stacked_step_ms']:.0f}",
            f"{row['sequential_samples_per_s']:.0f}", f"{row['stacked_samples_per_s']:.0f}",
            f"{row['ratio']:.2f}x",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


@dataclass
class DecompositionArguments:
    batches: list[int] = field(default_factory=lambda: [1, 4, 16, 32], metadata={"help": "batch sizes timed"})
    folds: int = field(default=10, metadata={"help": "folds trained each way"})
    model: str = field(default="mssenet", metadata={"help": "mssenet or timnet"})
    frames: int = field(default=65, metadata={"help": "frames per sample (the demo's 65)"})
    num_blocks: int | None = field(default=None, metadata={"help": "TABs (null: 10 / 8)"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (null: torch's)"})
    warmup: int = field(default=2, metadata={"help": "untimed steps of each way per batch size"})
    stacked_rounds: int = field(default=5, metadata={"help": "timed steps of each way per batch size"})
    out: str | None = field(default=None, metadata={"help": "write the results as JSON"})
    device: str = "cpu"
    precision: str = "32"
    # what time_stacking reads, set from the above per timed batch size
    batch_size: int = 16
    stacked: int = 10


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through (xs, ys)."""
    slope, intercept = statistics.linear_regression(xs, ys)
    return intercept, slope


def decompose(args: DecompositionArguments) -> dict:
    """Both ways' step times at each batch size and the fitted fixed and per-sample costs."""
    if len(set(args.batches)) < 2 or min(args.batches) < 1:
        raise ConfigError(f"batches={list(args.batches)}: expected two or more different sizes >= 1")
    if args.folds < 2:
        raise ConfigError(f"folds={args.folds}: expected a whole number >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for batch in args.batches:
        row = time_stacking(args.model, replace(args, batch_size=batch, stacked=args.folds), torch.device(args.device))
        rows.append({"batch_size": batch, **row})
    fits = {}
    for way in ("sequential", "stacked"):
        fixed, per_sample = _line(args.batches, [row[f"{way}_step_ms"] for row in rows])
        fits[way] = {"fixed_ms_per_step": fixed, "ms_per_batch_row": per_sample}
    per_row = fits["stacked"]["ms_per_batch_row"]
    for row in rows:  # the ratio if a stacked step cost its rows' arithmetic alone
        row["bound"] = row["sequential_step_ms"] / (per_row * row["batch_size"]) if per_row > 0 else None
    config = {name: value for name, value in vars(args).items() if name not in ("batch_size", "stacked")}
    return {"config": {**config, "threads": torch.get_num_threads()}, "rows": rows, "fits": fits}


def print_decomposition(results: dict) -> None:
    """The per-batch rows and the fitted costs as text."""
    folds = results["config"]["folds"]
    print(f"{results['config']['model']}, {folds} folds, {results['config']['threads']} threads: "
          "step ms of all folds, sequential / stacked")
    for row in results["rows"]:
        bound = "-" if row["bound"] is None else f"{row['bound']:.2f}x"
        print(f"  batch {row['batch_size']:3d}: {row['sequential_step_ms']:7.1f} / {row['stacked_step_ms']:7.1f}"
              f"  ratio {row['ratio']:.2f}x  bound without a fixed cost {bound}")
    for way, fit in results["fits"].items():
        print(f"  {way:10s}: {fit['fixed_ms_per_step']:6.1f} ms per step + {fit['ms_per_batch_row']:5.2f} ms "
              f"per batch row ({folds} samples)")


def main(argv: Sequence[str] | None = None) -> dict | None:
    """`python -m benchmarks.bench_stacked [key=value ...]`: the decomposition, printed."""
    usage = "usage: python -m benchmarks.bench_stacked [batches=[1,4,16,32]] [folds=10] [threads=2] [out=F]"

    def run(arguments: DecompositionArguments) -> dict:
        results = decompose(arguments)
        print_decomposition(results)
        if arguments.out is not None:
            Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
            Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
        return results

    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda a: run(parse_key_values(a, DecompositionArguments, usage)), argv)


if __name__ == "__main__":
    main()
