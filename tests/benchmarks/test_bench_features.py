"""`python -m benchmarks.bench_features`: our MFCCs against librosa's on the same clips."""

from __future__ import annotations

import pytest

from benchmarks import bench_features

pytest.importorskip("librosa")  # a dev tool, in the dev install the benchmarks need


def test_both_pipelines_are_timed_and_agree(capsys: pytest.CaptureFixture[str]) -> None:
    bench_features.main(["files=3"])
    out = capsys.readouterr().out
    lines = out[out.index("3 clips"):].splitlines()  # after the progress bar
    assert lines[0].startswith("3 clips of 1.5-4 s at 16000 Hz -> 96000 samples")
    rates = {line.split("  ")[1].strip(): float(line.split()[-2]) for line in lines[1:-1]}
    assert {"ours, end to end (read + resample + MFCC), CPU",
            "librosa, MFCC only (feature.mfcc per file)"} <= set(rates)
    assert all(rate > 0 for rate in rates.values())
    assert float(lines[-1].split()[-1]) < 1e-2  # the largest |ours - librosa| of any MFCC


def test_a_bad_number_of_files_is_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_features.main(["files=0"])
    assert exit_info.value.code == 2
    assert "files=0: expected 1..18200" in capsys.readouterr().err
