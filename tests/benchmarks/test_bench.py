"""`python -m benchmarks.bench`: every figure at a toy size, and its arguments checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import bench


def test_benchmark_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m benchmarks.bench` at a toy size (no memory-probe subprocesses): every figure."""
    monkeypatch.setattr(bench, "peak_memory_mib", lambda *args: 1.0)
    out = tmp_path / "bench.json"
    results = bench.main(
        [
            "batch_size=4", "frames=12", "num_blocks=2", "steps=2", "reference_steps=1",
            "warmup=0", "inference_runs=2", "threads=1", f"out={out}", "stacked=2",
            "stacked_rounds=1",
        ]
    )
    assert results is not None and out.exists()
    assert results["speedup"] > 0 and results["matmul_peak_gflops"] > 0
    assert set(results["models"]) == {
        "mssenet/reference", "mssenet/fast", "timnet/reference", "timnet/fast"
    }
    for row in results["models"].values():
        assert row["train_samples_per_s"] > 0 and row["inference_latency_ms"] > 0
        assert row["model_gflop_per_step"] > 0 and row["peak_memory_mib"] == 1.0
    assert bench.clip_frames(3.0) == 130
    assert set(results["stacked"]) == {"mssenet", "timnet"}
    for row in results["stacked"].values():  # the CPU's implementation, both sides timed
        assert row["implementation"] == "fast" and row["folds"] == 2
        assert row["stacked_samples_per_s"] > 0 and row["sequential_samples_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["sequential_step_ms"] / row["stacked_step_ms"])
    assert results["stacked_ratio"] == results["stacked"]["mssenet"]["ratio"]


def test_benchmark_arguments_are_checked() -> None:
    """A bad key=value argument is one line naming it, exit code 2."""
    for argument, message in (
        ("steps=0", "steps=0: expected a whole number >= 1"),
        ("stacked=-1", "stacked=-1: expected a whole number >= 0"),
        ("models=[nope]", "models=['nope']: expected some of ['mssenet', 'timnet']"),
        ("precision=bf16", "precision=bf16: the fast implementation computes in float32 only"),
        ("compile=fastest", "compile=fastest: expected null or one of"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            bench.check_arguments(bench.parse_key_values([argument], bench.BenchArguments, bench.USAGE))
