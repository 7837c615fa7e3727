"""Model complexity report: parameters, size, MACs per utterance and CPU latency per variant.

    ser-complexity [corpus=emodb] [features=mfcc|logmel|ssl] [frames=N] [runs=5]
        [latency=false] [train_step=BATCH] [out=report.json|report.md]
    (or python -m ser.tools.complexity ...)

Each variant is composed from the Hydra configs (``model=...`` and the ablation groups),
so the report describes the networks ``train.py`` builds. Size counts fp32 parameters and
buffers; MACs are ``torch.utils.flop_counter.FlopCounterMode``'s FLOPs / 2 (matrix products
and convolutions only); latency is the median batch-1 forward on the CPU after warm-up,
on one thread by default, since several threads on a shared machine swing by orders of
magnitude.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from ser.cli import parse_key_values, run_cli
from ser.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """A model variant: a label and the Hydra overrides of train.yaml that select it."""

    label: str
    overrides: tuple[str, ...]


VARIANTS: tuple[Variant, ...] = (
    Variant("MS-SENet (paper)", ()),
    Variant("MS-SENet, square kernels", ("model/kernels=square",)),
    Variant("MS-SENet, SE off", ("model/se=off",)),
    Variant("MS-SENet, avgpool", ("model/regularizer=avgpool",)),
    Variant("MS-SENet, dropout", ("model/regularizer=dropout",)),
    Variant("MS-SENet, no regulariser", ("model/regularizer=none",)),
    Variant("TIM-Net n=8", ("model=timnet",)),
    Variant("TIM-Net n=10", ("model=timnet", "model.net.num_blocks=10")),
)


@dataclass(frozen=True)
class ComplexityRow:
    label: str
    variant: str
    parameters: int
    size_mb: float
    macs: int
    latency_ms: float | None
    frames: int
    # Median ms of one training step (forward, backward, Adam) at `train_batch`, if measured.
    train_step_ms: float | None = None
    train_batch: int | None = None


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def size_megabytes(net: nn.Module) -> float:
    """Bytes of all parameters and buffers (fp32 here) in units of 10**6."""
    tensors = list(net.parameters()) + list(net.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def count_macs(net: nn.Module, frames: int, input_dim: int) -> int:
    """Multiply-accumulates of one (1, frames, input_dim) forward pass in eval mode.

    The pass runs on a copy on the meta device: shapes propagate and FLOPs are counted
    without computing anything, so long utterances cost no time.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if frames < 1:
        raise ConfigError(f"frames must be positive, got {frames}")
    shadow = copy.deepcopy(net).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        shadow(torch.zeros(1, frames, input_dim, device="meta"))
    return counter.get_total_flops() // 2


def cpu_latency_ms(
    net: nn.Module, frames: int, input_dim: int, runs: int = 5, threads: int = 1, warmup: int = 2
) -> float:
    """Median milliseconds of a batch-1 CPU forward pass on ``threads`` threads."""
    if runs < 1 or threads < 1:
        raise ConfigError(f"runs and threads must be positive, got {runs} and {threads}")
    net = net.cpu().eval()
    x = torch.randn(1, frames, input_dim)
    times = []
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                net(x)
            for _ in range(runs):
                start = time.perf_counter()
                net(x)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous_threads)
    return statistics.median(times)


def train_step_ms(
    net: nn.Module, frames: int, input_dim: int, batch: int, runs: int = 5, threads: int = 1
) -> float:
    """Median milliseconds of a training step (forward, cross-entropy, backward, Adam) on the CPU."""
    net = copy.deepcopy(net).cpu().train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, frames, input_dim)
    y = torch.randint(0, net.classifier.out_features, (batch,))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        for step in range(runs + 1):  # the first step warms up
            start = time.perf_counter()
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            if step:
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous_threads)
    return statistics.median(times)


def compose_model(overrides: Sequence[str]):
    """The root config composed with ``overrides`` (as ``python train.py OVERRIDES``)."""
    from ser.conf import compose

    return compose(overrides)


def build_variant(variant: Variant, num_classes: int, input_dim: int) -> tuple[str, nn.Module]:
    """(resolved variant name, network) for one variant, built for the CPU it is timed on."""
    from ser.training.implementation import instantiate_network

    cfg = compose_model(variant.overrides)
    net_settings = OmegaConf.to_container(cfg.model.net, resolve=True)
    net = instantiate_network(net_settings, "cpu", num_classes=num_classes, input_dim=input_dim)
    return str(cfg.variant), net


def corpus_shape(corpus: str, features: str = "mfcc") -> tuple[int, int, int]:
    """(frames, features, classes) of one utterance of ``corpus`` with ``features=<features>``
    (ssl: the frames and width of its model; no weights are needed for the shape)."""
    from ser.data.corpora import get_corpus
    from ser.data.corpora.base import CORPUS_RATE
    from ser.data.feature_kinds import feature_settings

    layout = get_corpus(corpus)
    config = compose_model((f"features={features}",)).features
    settings = feature_settings(config, seconds=layout.signal_length / CORPUS_RATE)
    return settings.num_frames, settings.num_features, len(layout.class_names)


def complexity_report(
    corpus: str = "emodb",
    frames: int | None = None,
    runs: int = 5,
    variants: Sequence[Variant] = VARIANTS,
    latency: bool = True,
    threads: int = 1,
    features: str = "mfcc",
    train_batch: int | None = None,
) -> list[ComplexityRow]:
    """One row per variant at ``frames`` (default: the corpus's frame count) of ``features``."""
    corpus_frames, input_dim, num_classes = corpus_shape(corpus, features)
    frames = int(frames or corpus_frames)
    if frames < 1:
        raise ConfigError(f"frames must be positive, got {frames}")
    rows = []
    for variant in variants:
        torch.manual_seed(0)
        name, net = build_variant(variant, num_classes, input_dim)
        net.eval()
        rows.append(
            ComplexityRow(
                label=variant.label,
                variant=name,
                parameters=parameter_count(net),
                size_mb=round(size_megabytes(net), 4),
                macs=count_macs(net, frames, input_dim),
                latency_ms=(
                    round(cpu_latency_ms(net, frames, input_dim, runs, threads), 3)
                    if latency else None
                ),
                frames=frames,
                train_step_ms=(
                    round(train_step_ms(net, frames, input_dim, train_batch, runs, threads), 1)
                    if train_batch else None
                ),
                train_batch=train_batch,
            )
        )
    return rows


HEADERS = ("model", "variant", "parameters", "size MB", "MACs (M)", "CPU latency ms")


def _headers(rows: Sequence[ComplexityRow]) -> tuple[str, ...]:
    batch = rows[0].train_batch if rows else None
    return HEADERS + ((f"train step ms (batch {batch})",) if batch else ())


def _cells(row: ComplexityRow) -> list[str]:
    latency = f"{row.latency_ms:.1f}" if row.latency_ms is not None else "-"
    cells = [
        row.label, row.variant, f"{row.parameters:,}", f"{row.size_mb:.3f}",
        f"{row.macs / 1e6:.2f}", latency,
    ]
    return cells + ([f"{row.train_step_ms:.1f}"] if row.train_step_ms is not None else [])


def to_markdown(rows: Sequence[ComplexityRow], title: str) -> str:
    headers = _headers(rows)
    lines = [f"**{title}**", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + "|")
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[ComplexityRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, header in enumerate(_headers(rows)):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*_cells(row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)


def write_report(rows: Sequence[ComplexityRow], path: Path, title: str, meta: dict) -> Path:
    """JSON for a ``.json`` path, a Markdown table otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    else:
        path.write_text(to_markdown(rows, title))
    return path


USAGE = (
    "usage: ser-complexity (or python -m ser.tools.complexity) [corpus=emodb] [features=mfcc] "
    "[frames=N] [runs=5] [threads=1] [latency=true] [train_step=BATCH] [out=report.json|report.md]"
)


@dataclass
class ComplexityArguments:
    corpus: str = field(default="emodb", metadata={"help": "frame count and classes of this corpus"})
    frames: int | None = field(default=None, metadata={"help": "override the frame count"})
    runs: int = field(default=5, metadata={"help": "timed runs per variant (median)"})
    threads: int = field(default=1, metadata={"help": "CPU threads for the latency"})
    features: str = field(
        default="mfcc", metadata={"help": "a features config: mfcc (39-d), logmel, ssl (768-d)"}
    )
    latency: bool = field(default=True, metadata={"help": "time the latency (false: skip it)"})
    train_step: int | None = field(
        default=None,
        metadata={"help": "also time a training step (forward, backward, Adam) at this batch size"},
    )
    out: str | None = field(default=None, metadata={"help": "also write .json or .md"})


def report(args: ComplexityArguments) -> list[ComplexityRow]:
    """Print (and with ``out=`` write) the report the arguments ask for."""
    rows = complexity_report(
        args.corpus, args.frames, args.runs, latency=args.latency, threads=args.threads,
        features=args.features, train_batch=args.train_step,
    )
    title = (
        f"{args.corpus}, features={args.features}: {rows[0].frames} frames per utterance, batch 1, "
        f"CPU with {args.threads} thread(s), torch {torch.__version__}"
    )
    print_table(rows, title)
    if args.out is not None:
        meta = {"corpus": args.corpus, "features": args.features, "frames": rows[0].frames, "threads": args.threads,
                "torch": torch.__version__, "latency_runs": args.runs}
        print(f"wrote {write_report(rows, Path(args.out), title, meta)}")
    return rows


def main(argv: Sequence[str] | None = None) -> list[ComplexityRow]:
    """`ser-complexity [key=value ...]`; a bad argument is one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda a: report(parse_key_values(a, ComplexityArguments, USAGE)), argv)


if __name__ == "__main__":
    main()
