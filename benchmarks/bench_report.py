"""What `python -m benchmarks.bench` prints and records besides its timings: the machine
it ran on (processor, load, compiled kernels) and the table of its results."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def native_kernels() -> str | None:
    """The compiled kernels' library the fast implementation uses (None: PyTorch formulation)."""
    from ser.models import native

    path = native.library_path()
    return None if path is None else str(path)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews the timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def processor_name() -> str:
    """The CPU's model name (Linux), or what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


HEADERS = (
    "model", "impl", "train samples/s", "speedup", "step ms", "GFLOP/step",
    "GFLOP/s", "% peak", "peak MiB", "latency ms (3 s)", "infer samples/s",
)


def cells(name: str, row: dict) -> list[str]:
    """One row of the table."""
    def shown(value: float | None, form: str, unit: str = "") -> str:
        return "-" if value is None else format(value, form) + unit

    return [
        row["model"], row["implementation"],
        f"{row['train_samples_per_s']:.1f}", shown(row.get("speedup"), ".2f", "x"),
        f"{row['train_step_ms_median']:.1f}", f"{row['model_gflop_per_step']:.2f}",
        f"{row['achieved_gflops']:.1f}", f"{100 * row['fraction_of_matmul_peak']:.0f}",
        shown(row["peak_memory_mib"], ".0f"),
        shown(row["inference_latency_ms"], ".1f"), shown(row["inference_samples_per_s"], ".0f"),
    ]


def print_table(results: dict) -> None:
    """The results as a rich table, with the speedups and the load averages."""
    from rich.console import Console
    from rich.table import Table

    config = results["config"]
    title = (
        f"Training and inference speed on {config['device']} ({config['threads']} threads), "
        f"batch {config['batch_size']} x {config['frames']} frames; "
        f"fp32 matmul peak {results['matmul_peak_gflops']:.0f} GFLOP/s"
    )
    table = Table(title=title)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i < 2 else "right")
    for name, row in results["models"].items():
        table.add_row(*cells(name, row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    environment = results["environment"]
    speedups = ", ".join(
        f"{name}: {results[key]:.2f}x"
        for name, key in (("MS-SENet", "speedup"), ("TIM-Net", "timnet_speedup"))
        if results.get(key) is not None
    )
    console.print(
        f"Speedup (fast / reference training samples/s): {speedups or '-'}. "
        f"Precision {config.get('precision', '32')}, compile {config.get('compile')}. Load average at start "
        f"{environment['load_average_at_start']}, at end {environment['load_average_at_end']}."
    )
