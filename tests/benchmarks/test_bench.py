"""`python -m benchmarks.bench`: every figure at a toy size, and its arguments checked."""

from __future__ import annotations

import json
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


def test_stacking_decomposition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m benchmarks.bench_stacked`: both ways timed per batch size, and the fitted
    fixed and per-row costs are the line through the timed steps."""
    from benchmarks import bench_stacked

    out = tmp_path / "decomposition.json"
    results = bench_stacked.main(
        ["batches=[1,3]", "folds=2", "num_blocks=2", "frames=12", "warmup=0",
         "stacked_rounds=1", "threads=1", f"out={out}"]
    )
    assert results is not None and json.loads(out.read_text())["fits"] == results["fits"]
    assert [row["batch_size"] for row in results["rows"]] == [1, 3]
    for row in results["rows"]:
        assert row["folds"] == 2 and row["implementation"] == "fast"
        assert row["ratio"] == pytest.approx(row["sequential_step_ms"] / row["stacked_step_ms"])
        for way in ("sequential", "stacked"):  # two sizes: the line passes through both
            fit = results["fits"][way]
            predicted = fit["fixed_ms_per_step"] + fit["ms_per_batch_row"] * row["batch_size"]
            assert predicted == pytest.approx(row[f"{way}_step_ms"])
    for argument, message in (("batches=[4]", "batches=[4]: expected two or more different sizes"),
                              ("folds=1", "folds=1: expected a whole number >= 2")):
        with pytest.raises(SystemExit) as exit_info:
            bench_stacked.main([argument])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
