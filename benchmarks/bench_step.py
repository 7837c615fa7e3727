"""One timed training step of MS-SENet or TIM-Net, for the benchmarks (benchmarks.bench).

A `Trainer` holds a network, its Adam optimiser with the project's settings and a fixed
random batch; its steps run under bf16 autocast or not, compiled or not, and synchronise
around each timed step on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from typing import Any

import torch
from torch import nn

from ser.models import MSSENet, TIMNet
from ser.models.implementations import IMPLEMENTATIONS as IMPLEMENTATION_TABLE
from ser.training.compile_cache import use_private_compile_cache

IMPLEMENTATIONS = tuple(IMPLEMENTATION_TABLE)
MODELS = ("mssenet", "timnet")
PRECISIONS = ("32", "bf16")
NUM_CLASSES = 7


def build_model(model: str, implementation: str, num_blocks: int | None) -> nn.Module:
    if model == "mssenet":
        return MSSENet(NUM_CLASSES, num_blocks=num_blocks or 10, implementation=implementation)
    if model == "timnet":
        return TIMNet(NUM_CLASSES, num_blocks=num_blocks or 8, implementation=implementation)
    raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, precision: str):  # noqa: ANN201
    """A factory of the step's autocast context: bf16 autocast, or nothing for "32"."""
    if precision == "bf16":
        return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class Trainer:
    """One model, its Adam optimiser (the project's settings) and a fixed random batch."""

    def __init__(
        self, model: str, implementation: str, args: Any, device: torch.device
    ) -> None:
        torch.manual_seed(0)
        self.device = device
        self.model = build_model(model, implementation, args.num_blocks).to(device).train()
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=1e-3, betas=(0.93, 0.98), eps=1e-8, fused=True
        )
        self.autocast = autocast_context(device, args.precision)
        self.forward: nn.Module = self.model
        self.compile_seconds: float | None = None
        if args.compile:
            use_private_compile_cache()
            self.forward = torch.compile(self.model, mode=args.compile)
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(args.batch_size, args.frames, 39, generator=generator)
        y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator)
        self.x, self.y = x.to(device), y.to(device)
        self.times: list[float] = []
        self.system_seconds = 0.0  # kernel time (page faults) during the timed steps
        self.minor_faults = 0

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.forward(self.x)
            loss = nn.functional.cross_entropy(logits.float(), self.y, label_smoothing=0.1)
        loss.backward()
        self.optimizer.step()

    def compile_step(self) -> None:
        """The first steps of a compiled model, which compile it (timed apart)."""
        synchronise(self.device)
        start = time.perf_counter()
        for _ in range(3):  # reduce-overhead records its CUDA graphs on a later call
            self.step()
        synchronise(self.device)
        self.compile_seconds = time.perf_counter() - start

    def timed_step(self) -> None:
        import resource  # Unix only; the benchmark's page-fault figures

        synchronise(self.device)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        self.step()
        synchronise(self.device)
        self.times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.system_seconds += after.ru_stime - usage.ru_stime
        self.minor_faults += after.ru_minflt - usage.ru_minflt

    def count_flops(self) -> int:
        """FLOPs of one training step of the model (uncompiled; also a warm-up step)."""
        from torch.utils.flop_counter import FlopCounterMode

        forward, self.forward = self.forward, self.model
        try:
            with FlopCounterMode(display=False) as counter:
                self.step()
        finally:
            self.forward = forward
        return int(counter.get_total_flops())


def matmul_peak(device: torch.device, size: int = 2048, seconds: float = 1.0) -> float:
    """Best fp32 GFLOP/s of a square GEMM over about `seconds`."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)
    best = math.inf
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        synchronise(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronise(device)
        best = min(best, time.perf_counter() - start)
        runs += 1
    return 2 * size**3 / best / 1e9
