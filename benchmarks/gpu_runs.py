"""The GPU check's steps as processes (Check), and its training runs: sizes, commands,
fold figures and the fold-run steps of benchmarks.gpu_check.

The runs are the user's own command, `python -m ser.training` (= `python train.py`), on
the generated synthetic corpus made EMODB-sized: 10 speakers x 7 classes x 8 utterances
= 560 clips (EMODB has 535) of 96 000 samples at 22 050 Hz, i.e. 188 frames, batch 64,
10 folds. Several fold jobs share the GPU through the joblib launcher
(`+parallel=folds hydra/launcher=parallel hydra.launcher.n_jobs=N`), whose GPU-slot
callback (ser.sweeps.callbacks.GpuSlots) puts all N on the one GPU; or all folds train
stacked in one Trainer (`cv.stack=true`, ser.training.stacked). Every other way sets
`cv.stack=false`. W&B is off (`logger=none`) and so are progress bars: the check times
training, not logging.

Identical fold figures from fold jobs and from one fold after another need deterministic
kernels: the default CUDA ones are not (an atomic-add reduction's order varies from run to
run), so the check compares the two ways once more with `trainer.deterministic=true`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import child_environment
from ser.tracking.atomic import atomic_write_json


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
    deterministic_epochs: int
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
                deterministic_epochs=1, full_epochs=2, bench_steps=1, bench_warmup=0, bench_limit_s=120,
                fold_limit_s=150, reserve_s=10, tests_limit_s=60, feature_signals=8,
            )
        return cls(
            device="cuda", batch_size=64, folds=10, speakers=10, utterances_per_class_per_speaker=8,
            seconds=4.0, signal_length=96000, parallel_jobs=(1, 4, 10), short_epochs=20,
            deterministic_epochs=2, full_epochs=200, bench_steps=30, bench_warmup=5, bench_limit_s=100,
            fold_limit_s=200, reserve_s=100, tests_limit_s=120, feature_signals=560,
        )

    def describe(self) -> dict[str, Any]:
        utterances = self.speakers * 7 * self.utterances_per_class_per_speaker
        return {**asdict(self), "utterances": utterances, "classes": 7}


@dataclass(frozen=True)
class Way:
    """How a run trains its folds: `jobs` fold jobs at once (1: one after another), or
    all of them stacked in one Trainer."""

    name: str
    jobs: int = 1
    stacked: bool = False


def fold_ways(sizes: Sizes) -> list[Way]:
    """One fold after another, stacked, and each number of fold jobs sharing the GPU."""
    return [Way("sequential"), Way("stacked", stacked=True)] + [
        Way(f"jobs{jobs}", jobs) for jobs in sizes.parallel_jobs if jobs > 1
    ]


@dataclass
class Check:
    """The check's folder, its deadline and the record of every step so far."""

    out: Path
    deadline: float
    dry: bool
    sizes: Sizes
    # overrides every fold run adds (compile=MODE: model.compile=MODE)
    fold_overrides: tuple[str, ...] = ()
    # full_jobs=N: the full protocol at once with this many fold jobs, nothing else
    full_jobs: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    fold_runs: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, name: str, status: str, seconds: float, **details: Any) -> dict[str, Any]:
        entry = {"step": name, "status": status, "seconds": round(seconds, 2), **details}
        self.steps.append(entry)
        self.write("summary.json", {"dry": self.dry, "steps": self.steps})
        print(f"[gpu-check] {name}: {status} ({seconds:.1f} s)", flush=True)
        return entry

    def write(self, name: str, data: Any) -> None:
        atomic_write_json(data, self.out / name)

    def write_fold_runs(self) -> None:
        """folds.json: the sizes and every fold run so far."""
        self.write("folds.json", {"sizes": self.sizes.describe(), "runs": self.fold_runs})

    def fold_command(self, root: Path, run_dir: Path, epochs: int, way: Way) -> list[str]:
        """The cross-validation run of the check's sizes, with `fold_overrides` added."""
        return fold_run_command(self.sizes, root, run_dir, epochs, way.jobs, stacked=way.stacked) + list(
            self.fold_overrides
        )

    def run(self, name: str, command: Sequence[str], limit: float, **env: str) -> dict[str, Any]:
        """Run `command` as step `name` within `limit` seconds (and the budget); log it."""
        timeout = min(limit, self.remaining())
        if timeout < 5:
            return self.record(name, "skipped", 0.0, reason="time budget spent")
        log_path = self.out / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        start = time.monotonic()
        with log_path.open("w") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            # A session of its own: on a timeout the step's whole process group goes (a
            # multirun's job processes too), so nothing keeps the GPU busy afterwards.
            process = subprocess.Popen(
                list(command), stdout=log, stderr=subprocess.STDOUT,
                env=child_environment(**env), start_new_session=True,
            )
            try:
                returncode = process.wait(timeout=timeout)
                status = "ok" if returncode == 0 else f"failed (exit {returncode})"
            except subprocess.TimeoutExpired:
                status = f"timeout after {timeout:.0f} s"
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        seconds = time.monotonic() - start
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        return self.record(name, status, seconds, command=" ".join(command), log_tail=tail)


def fold_run_command(
    sizes: Sizes, root: Path, run_dir: Path, epochs: int, jobs: int, folds: int | None = None,
    stacked: bool = False,
) -> list[str]:
    """`python -m ser.training ...` for one cross-validation of the EMODB-sized corpus.

    jobs = 1: one fold after another in one process, or with `stacked` all folds in one
    Trainer; jobs > 1: a multirun of one job per fold (`+parallel=folds`), `jobs` of them
    at once, all sharing the output directory.
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
        f"cv.stack={str(stacked).lower()}",
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
    """{fold: {test/uar, test/war, seconds, fit_seconds}} from a run's results.json ({} if none)."""
    path = run_dir / "results.json"
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {
        str(fold["fold"]): {
            key: fold[key] for key in ("test/uar", "test/war", "seconds", "fit_seconds") if key in fold
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

    Each fold's training (`fit_seconds`; its whole time in records without it, an upper
    bound) scales with the epochs; the rest of the fold (building, testing) does not, and
    the folds run `jobs` at a time; what is left of the wall time (process start, corpus
    and features, gathering) is paid once.
    """
    folds = run["folds"].values()
    if run.get("stacked"):
        # One fit for every fold (each record reports it): only it grows; the rest of the
        # wall time (set-up, the folds' tests) is paid once.
        fit = max((fold.get("fit_seconds", 0.0) for fold in folds), default=0.0)
        return run["wall_s"] + fit * (full_epochs / run["epochs"] - 1)
    fold_seconds = sum(fold.get("seconds", 0.0) for fold in folds)
    fit_seconds = sum(fold.get("fit_seconds", fold.get("seconds", 0.0)) for fold in folds)
    concurrent = min(run["jobs"], max(1, len(run["folds"])))
    fixed = max(0.0, run["wall_s"] - fold_seconds / concurrent)
    scaled = fold_seconds - fit_seconds + fit_seconds * full_epochs / run["epochs"]
    return fixed + scaled / concurrent


def short_fold_runs(check: Check, root: Path) -> None:
    """folds.json: the 10-fold protocol one fold at a time, stacked, and with jobs sharing the GPU."""
    sizes = check.sizes
    compared_fold_runs(
        check, root, "", fold_ways(sizes), sizes.short_epochs, project_to=sizes.full_epochs
    )


def deterministic_fold_runs(check: Check, root: Path) -> None:
    """folds.json, `deterministic-*`: one fold after another against stacked folds and fold
    jobs sharing the GPU, all with `trainer.deterministic=true`: `identical` says whether
    each one's fold figures equal the first's (fold jobs: they must; stacked folds: equal
    up to floating-point order, identical where the folds' networks run one by one)."""
    sizes = check.sizes
    ways = [way for way in fold_ways(sizes) if way.jobs in (1, sizes.parallel_jobs[1])]
    runs = compared_fold_runs(
        check, root, "deterministic-", ways, sizes.deterministic_epochs, ("trainer.deterministic=true",)
    )
    if all(run["status"] == "ok" for run in runs):
        for run in runs[1:]:
            run["identical"] = run.get("differences_from_first") == {
                "folds_compared": sizes.folds, "max_abs_uar_difference": 0.0, "max_abs_war_difference": 0.0,
            }
        check.write_fold_runs()


def compared_fold_runs(
    check: Check, root: Path, label: str, ways: Sequence[Way], epochs: int,
    overrides: Sequence[str] = (), project_to: int | None = None,
) -> list[dict[str, Any]]:
    """Cross-validate once per way as steps `folds-{label}{way}`; each run's fold figures
    are compared with the first run's, its wall time projected to `project_to` epochs if
    given, and folds.json rewritten."""
    reference_metrics = None
    runs = []
    for way in ways:
        name = label + way.name
        run_dir = root / f"short-{name}"
        command = check.fold_command(root, run_dir, epochs, way) + list(overrides)
        # dry: one thread in every process, as in each parallel job, so that the runs do
        # the same arithmetic and their fold figures must agree exactly
        threads = {"OMP_NUM_THREADS": "1"} if check.dry else {}
        entry = check.run(f"folds-{name}", command, limit=check.sizes.fold_limit_s, **threads)
        metrics = read_fold_metrics(run_dir)
        run = check.fold_runs[name] = {
            "jobs": way.jobs, "stacked": way.stacked, "epochs": epochs, "status": entry["status"],
            "wall_s": entry["seconds"], "folds": metrics,
        }
        if overrides:
            run["overrides"] = list(overrides)
        if project_to is not None and metrics and entry["status"] == "ok":
            run["projected_full_s"] = projected_full_seconds(run, project_to)
        if metrics and reference_metrics is None:
            reference_metrics = metrics
        elif metrics:
            run["differences_from_first"] = compare_folds(reference_metrics, metrics)
        runs.append(run)
        check.write_fold_runs()  # after each run: a check cut short keeps what it measured
    return runs


def full_fold_run(check: Check, root: Path) -> None:
    """The full protocol (200 epochs) the way the short runs found fastest, if it fits;
    or, with full_jobs=N, that many fold jobs at once, in whatever time is left."""
    sizes = check.sizes
    if check.full_jobs is not None:
        run_full(check, root, Way(f"jobs{check.full_jobs}", check.full_jobs), check.remaining(), projected=None)
        return
    projected = {
        name: run["projected_full_s"] for name, run in check.fold_runs.items()
        if "projected_full_s" in run
    }
    if not projected:
        check.record("folds-full", "skipped", 0.0, reason="no short run finished")
        return
    best = min(projected, key=projected.__getitem__)
    available = check.remaining() - sizes.reserve_s
    # The projection scales each fold's whole training, its first, slower epoch included
    # (and its set-up and test too in records without fit_seconds): an upper bound, so
    # only a run clearly out of reach is skipped; a timeout is recorded as such.
    if projected[best] > 1.5 * available:
        check.record(
            "folds-full", "skipped", 0.0,
            reason=f"{best}: projected {projected[best]:.0f} s, {available:.0f} s left",
        )
        return
    fastest = check.fold_runs[best]
    run_full(check, root, Way(best, fastest["jobs"], fastest["stacked"]), available, projected[best])


def run_full(check: Check, root: Path, way: Way, limit: float, projected: float | None) -> None:
    epochs, run_dir = check.sizes.full_epochs, root / "full"
    entry = check.run("folds-full", check.fold_command(root, run_dir, epochs, way), limit=limit)
    check.fold_runs["full"] = {
        "jobs": way.jobs, "stacked": way.stacked, "epochs": epochs, "status": entry["status"],
        "wall_s": entry["seconds"], "projected_s": projected, "overrides": list(check.fold_overrides),
        "folds": read_fold_metrics(run_dir),
    }
    check.write_fold_runs()


def ddp(check: Check, root: Path) -> None:
    """ddp.json: the DDP path (NCCL on a GPU, gloo on a CPU) through the CLI, one device."""
    sizes = check.sizes
    run_dir = root / "ddp"
    command = fold_run_command(sizes, root, run_dir, 2, 1, folds=2) + [
        "trainer=ddp", "trainer.devices=1",
    ]
    entry = check.run("ddp", command, limit=sizes.fold_limit_s)
    check.write("ddp.json", {**entry, "folds": read_fold_metrics(run_dir)})
