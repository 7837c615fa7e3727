"""`python -m ser.tools.complexity`: parameters, size, MACs and latency of each model variant."""

from __future__ import annotations

import json
from pathlib import Path

from ser.tools.complexity import VARIANTS, build_variant, complexity_report, count_macs, main


def by_label(rows):
    return {row.label: row for row in rows}


def test_parameter_counts_of_the_default_variants_at_emodbs_frame_count() -> None:
    rows = by_label(complexity_report(variants=(VARIANTS[0], VARIANTS[6]), latency=False))
    mssenet, timnet = rows["MS-SENet (paper)"], rows["TIM-Net n=8"]
    assert mssenet.parameters == 148_180
    assert timnet.parameters == 104_496
    assert mssenet.frames == timnet.frames == 188
    # fp32 parameters plus BatchNorm buffers: a little over 4 bytes per parameter.
    assert 148_180 * 4 / 1e6 < mssenet.size_mb < 148_180 * 4.2 / 1e6
    assert mssenet.macs > timnet.macs > 0
    assert mssenet.latency_ms is None


def test_macs_are_positive_and_grow_with_the_frame_count() -> None:
    _, net = build_variant(VARIANTS[0], num_classes=7, input_dim=39)
    macs = [count_macs(net, frames, 39) for frames in (32, 64, 128)]
    assert 0 < macs[0] < macs[1] < macs[2]
    # Everything counted is convolution or matrix product over frames: close to linear.
    assert 1.8 < macs[2] / macs[1] < 2.2


def test_every_variant_composes_a_distinct_network_and_the_cli_writes_reports(tmp_path: Path) -> None:
    out = tmp_path / "complexity.json"
    rows = main(["frames=24", "runs=1", f"out={out}"])
    assert [row.label for row in rows] == [v.label for v in VARIANTS]
    assert len({row.variant for row in rows}) == len(VARIANTS)
    assert all(row.macs > 0 and row.latency_ms > 0 and row.frames == 24 for row in rows)
    labels = by_label(rows)
    assert labels["TIM-Net n=10"].parameters > labels["TIM-Net n=8"].parameters
    assert labels["MS-SENet, square kernels"].parameters < labels["MS-SENet (paper)"].parameters
    assert labels["MS-SENet, SE off"].parameters < labels["MS-SENet (paper)"].parameters
    report = json.loads(out.read_text())
    assert report["frames"] == 24 and len(report["rows"]) == len(VARIANTS)

    markdown = tmp_path / "complexity.md"
    main(["frames=24", "latency=false", f"out={markdown}"])
    text = markdown.read_text()
    assert "| MS-SENet (paper) |" in text and "148,180" in text


def test_ssl_features_widen_the_input_and_a_training_step_is_timed(tmp_path: Path) -> None:
    """`--features ssl`: WavLM Base+'s 768-d frames at EMODB's length (217 frames)."""
    rows = by_label(complexity_report(
        variants=(VARIANTS[0], VARIANTS[6]), latency=False, features="ssl", train_batch=2, runs=1,
    ))
    mssenet, timnet = rows["MS-SENet (paper)"], rows["TIM-Net n=8"]
    assert mssenet.frames == timnet.frames == 217
    # The fusion block's pointwise layers read 4 x 768 channels instead of 4 x 39 (two streams).
    assert mssenet.parameters == 148_180 + 2 * 39 * 4 * (768 - 39) == 375_628
    assert timnet.parameters == 104_496 + 2 * 39 * (768 - 39) == 161_358
    assert mssenet.train_step_ms > 0 and mssenet.train_batch == 2
    out = tmp_path / "ssl.md"
    main(["features=ssl", "frames=8", "latency=false", "train_step=2", "runs=1", f"out={out}"])
    assert "train step ms (batch 2)" in out.read_text() and "features=ssl" in out.read_text()
