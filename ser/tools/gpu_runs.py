"""The training runs of the GPU check (ser.tools.gpu_check): sizes, commands, fold figures.

The runs are the user's own command, `python -m ser.training` (= `python train.py`), on
the generated synthetic corpus made EMODB-sized: 10 speakers x 7 classes x 8 utterances
= 560 clips (EMODB has 535) of 96 000 samples at 22 050 Hz, i.e. 188 frames, batch 64,
10 folds. Several fold jobs share the GPU through the joblib launcher
(`+parallel=folds hydra/launcher=parallel hydra.launcher.n_jobs=N`), whose GPU-slot
callback (ser.sweeps.callbacks.GpuSlots) puts all N on the one GPU. W&B is off
(`logger=none`) and so are progress bars: the check times training, not logging.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """Sizes and time limits of the check's steps, for a GPU or for the dry mode."""

    device: str
    batch_size: int
    folds: int
    speakers: int
    utterances_per_class_per_speaker: int
    seconds: float
    signal_length: int
    parallel_jobs: tuple[int, ...]
    short_epochs: int
    full_epochs: int
    bench_steps: int
    bench_warmup: int
    bench_limit_s: float
    fold_limit_s: float
    reserve_s: float
    tests_limit_s: float
    feature_signals: int

    @classmethod
    def for_mode(cls, dry: bool) -> Sizes:
        if dry:  # a toy protocol on the CPU: the check's code paths, not its figures
            return cls(
                device="cpu", batch_size=8, folds=2, speakers=2, utterances_per_class_per_speaker=2,
                seconds=0.5, signal_length=11025, parallel_jobs=(1, 2), short_epochs=1,
                full_epochs=2, bench_steps=1, bench_warmup=0, bench_limit_s=120,
                fold_limit_s=150, reserve_s=10, tests_limit_s=60, feature_signals=8,
            )
        return cls(
            device="cuda", batch_size=64, folds=10, speakers=10, utterances_per_class_per_speaker=8,
            seconds=4.0, signal_length=96000, parallel_jobs=(1, 4, 10), short_epochs=20,
            full_epochs=200, bench_steps=30, bench_warmup=5, bench_limit_s=100,
            fold_limit_s=200, reserve_s=100, tests_limit_s=120, feature_signals=560,
        )

    def describe(self) -> dict[str, Any]:
        utterances = self.speakers * 7 * self.utterances_per_class_per_speaker
        return {**asdict(self), "utterances": utterances, "classes": 7}


def fold_run_command(
    sizes: Sizes, root: Path, run_dir: Path, epochs: int, jobs: int, folds: int | None = None
) -> list[str]:
    """`python -m ser.training ...` for one cross-validation of the EMODB-sized corpus.

    jobs = 1: one fold after another in one process; jobs > 1: a multirun of one job per
    fold (`+parallel=folds`), `jobs` of them at once, all sharing the output directory.
    """
    folds = folds or sizes.folds
    command = [
        sys.executable, "-m", "ser.training",
        "dataset=synthetic", "model=mssenet", "logger=none", "progress=false",
        f"paths.data_dir={root / 'data'}",
        f"dataset.generator.num_speakers={sizes.speakers}",
        f"dataset.generator.utterances_per_class_per_speaker={sizes.utterances_per_class_per_speaker}",
        f"dataset.generator.seconds={sizes.seconds}",
        f"dataset.signal_length={sizes.signal_length}",
        f"dataset.batch_size={sizes.batch_size}",
        f"cv.folds={folds}",
        f"trainer.max_epochs={epochs}",
    ]
    if sizes.device == "cpu":
        command.append("trainer.accelerator=cpu")
    if jobs == 1:
        return command + [f"hydra.run.dir={run_dir}"]
    return [
        *command[:3], "-m", *command[3:], "+parallel=folds", "hydra/launcher=parallel",
        f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir={run_dir}",
    ]


def read_fold_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """{fold: {test/uar, test/war, seconds}} from a run's results.json ({} if none)."""
    path = run_dir / "results.json"
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {
        str(fold["fold"]): {
            key: fold[key] for key in ("test/uar", "test/war", "seconds") if key in fold
        }
        for fold in record.get("folds", [])
    }


def compare_folds(
    first: dict[str, dict[str, float]], other: dict[str, dict[str, float]]
) -> dict[str, float | int]:
    """The largest per-fold difference of UAR and WAR between two runs of one protocol."""
    shared = sorted(set(first) & set(other))
    return {
        "folds_compared": len(shared),
        "max_abs_uar_difference": max(
            (abs(first[f]["test/uar"] - other[f]["test/uar"]) for f in shared), default=0.0
        ),
        "max_abs_war_difference": max(
            (abs(first[f]["test/war"] - other[f]["test/war"]) for f in shared), default=0.0
        ),
    }


def projected_full_seconds(run: dict[str, Any], full_epochs: int) -> float:
    """The full protocol's wall time projected from a short run of the same jobs.

    The per-fold seconds scale with the epochs and run `jobs` at a time; what is left of
    the wall time (process start, corpus and features, gathering) is paid once.
    """
    fold_seconds = sum(fold.get("seconds", 0.0) for fold in run["folds"].values())
    concurrent = min(run["jobs"], max(1, len(run["folds"])))
    training = fold_seconds / concurrent
    fixed = max(0.0, run["wall_s"] - training)
    return fixed + training * full_epochs / run["epochs"]
