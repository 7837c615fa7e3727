"""Fold-parallel cross-validation: the folds a job runs, and one results.json from all jobs.

The folds of an experiment are independent, so they can run as separate jobs (joblib
workers, SLURM array tasks) that share one output directory. Each job trains the folds
`cv.only_folds` names (an int or a list; null: all), writing `folds/fold_KK.json`
atomically as before, and `folds/experiment.json`: what the experiment is (its config
hash, corpus, seeds, number of folds). The job that finds every fold finished writes
`results.json`; `ser-gather dir=DIR` (`python -m ser.training.gather dir=DIR`) does the same by hand, or says which folds
are still missing. Fold files are only gathered when they all carry the experiment's
config hash and their test folds do not overlap.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from ser.cli import parse_key_values, run_cli
from ser.errors import InputError
from ser.tracking import results

SUMMARY_CLAIM_FILE = ".summary_claimed"
# cv settings that say which folds a job runs and in how many processes, not what a fold
# computes: left out of the config hash, so every job of one experiment shares it.
JOB_CV_KEYS = ("only_folds", "workers")
# Record fields that describe a finished experiment rather than what it is.
OUTCOME_KEYS = ("status", "folds", "summary", "finished")

FOLD_FILE = re.compile(r"fold_(\d+)\.json")


class GatherError(InputError):
    """Fold files that do not make one experiment."""


class IncompleteError(GatherError):
    """Some folds of the experiment have not finished (yet)."""


def select_folds(only_folds: Any, num_folds: int) -> list[int]:
    """The folds a job runs: `cv.only_folds` (an int, a list of ints, or None for all)."""
    if only_folds is None:
        return list(range(num_folds))
    chosen = [only_folds] if isinstance(only_folds, int) else list(only_folds)
    if not chosen:
        raise GatherError("cv.only_folds is empty; give fold numbers, or null for every fold")
    wrong = [fold for fold in chosen if not isinstance(fold, int) or not 0 <= fold < num_folds]
    if wrong:
        raise GatherError(
            f"cv.only_folds={list(chosen)} names folds outside 0..{num_folds - 1}: {wrong}"
        )
    return sorted(set(chosen))


def experiment_header(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a results.json record that every job of the experiment shares."""
    header = {key: value for key, value in record.items() if key not in OUTCOME_KEYS}
    config = header.get("config")
    if isinstance(config, dict) and isinstance(config.get("cv"), dict):
        header["config"] = {**config, "cv": {**config["cv"], **{key: None for key in JOB_CV_KEYS}}}
    return header


def write_header(output_dir: Path, record: dict[str, Any]) -> None:
    """Write `folds/experiment.json`, refusing a directory that holds another experiment."""
    path = results.header_path(output_dir)
    if path.exists():
        previous = results.read_json(path)
        if previous.get("config_hash") != record["config_hash"]:
            raise GatherError(
                f"{path} belongs to a different configuration (config hash "
                f"{previous.get('config_hash')}, this run {record['config_hash']}); choose a "
                f"new output directory instead of mixing experiments"
            )
    results.atomic_write_json(experiment_header(record), path)


def read_fold_files(output_dir: Path) -> dict[int, dict[str, Any]]:
    """Every `folds/fold_KK.json` of the directory, by fold number."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted((Path(output_dir) / results.FOLDS_DIR).glob("fold_*.json")):
        match = FOLD_FILE.fullmatch(path.name)
        if match is None:
            continue
        saved = results.read_json(path)
        fold = int(match.group(1))
        if saved.get("result", {}).get("fold") != fold:
            raise GatherError(f"{path} holds the result of fold {saved.get('result', {}).get('fold')}")
        found[fold] = saved
    return found


def gather(output_dir: Path) -> dict[str, Any]:
    """The complete results.json record of `output_dir` from its fold files.

    Raises IncompleteError while folds are missing, GatherError when the fold files
    come from different configurations or their test folds overlap.
    """
    output_dir = Path(output_dir)
    path = results.header_path(output_dir)
    if not path.exists():
        raise GatherError(f"{path} is missing: {output_dir} is not the output directory of a ser run")
    header = results.read_json(path)
    expected = int(header["cv"]["folds"])
    saved = read_fold_files(output_dir)
    foreign = sorted(
        fold for fold, entry in saved.items()
        if (entry.get("config_hash"), entry.get("data_hash")) != (header["config_hash"], header.get("data_hash"))
    )
    if foreign:
        raise GatherError(
            f"folds {foreign} in {output_dir} were computed with a different configuration or on other "
            f"data than {path} (config hash {header['config_hash']}, data hash {header.get('data_hash')})"
        )
    extra = sorted(fold for fold in saved if fold >= expected)
    if extra:
        raise GatherError(f"folds {extra} in {output_dir} are beyond the experiment's {expected} folds")
    missing = [fold for fold in range(expected) if fold not in saved]
    if missing:
        raise IncompleteError(
            f"{len(missing)} of {expected} folds are not finished in {output_dir}: {missing}"
        )
    folds = [saved[fold]["result"] for fold in range(expected)]
    tested: set[int] = set()
    for fold in folds:
        rows = {int(row) for row in fold.get("test_rows", [])}
        if tested & rows:
            raise GatherError(f"the test rows of fold {fold['fold']} overlap earlier folds in {output_dir}")
        tested |= rows
    return {
        **header,
        "status": "complete",
        "folds": folds,
        "summary": results.summarise(folds),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(output_dir: Path) -> dict[str, Any]:
    """Gather `output_dir` and write its results.json atomically; return the record."""
    record = gather(output_dir)
    results.atomic_write_json(record, Path(output_dir) / results.RESULTS_FILE)
    return record


def claim_summary(output_dir: Path) -> bool:
    """True for exactly one caller per output directory: the job that logs the summary.

    Several fold jobs may find every fold finished at about the same time; all of them
    may write the same results.json, but only one should start a W&B summary run.
    """
    path = Path(output_dir) / results.FOLDS_DIR / SUMMARY_CLAIM_FILE
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(handle)
    return True


USAGE = "usage: ser-gather (or python -m ser.training.gather) dir=OUTPUT_DIR"


@dataclass
class GatherArguments:
    dir: str = field(default=MISSING, metadata={"help": "the experiment's output directory"})


def gather_directory(args: GatherArguments) -> int:
    """Write results.json in ``args.dir`` and print its table; 2 when folds are missing."""
    directory = Path(args.dir)
    try:
        record = write_results(directory)
    except GatherError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    title = f"{record.get('experiment', '')}  ({directory.resolve()})"
    results.print_table(title, record["folds"], record["summary"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`ser-gather dir=DIR`: write DIR/results.json from its fold files."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda a: gather_directory(parse_key_values(a, GatherArguments, USAGE)), argv)


if __name__ == "__main__":
    sys.exit(main())
