"""Scaling out: DDP on one fold (each test utterance counted once) and fold-parallel jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict

from ser import distributed, gather, results, training
from ser.checkpoint import load_dict
from ser.metrics import UtterancePredictions
from tests.conftest import ROOT, TINY, TINY_DATA, compose_config
from tests.wandb_records import offline_runs

# A test fold of 7 utterances: 4 folds of the 28-utterance tiny corpus. On 2 processes
# the distributed sampler pads it to 8, repeating one utterance.
DDP_OVERRIDES = [*TINY, "cv.folds=4", "cv.only_folds=[0]", "dataset.batch_size=3", "trainer.deterministic=true"]


def run_train_py(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python train.py ARGS`, one thread per process (two cores, up to two processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return completed


# -- units ----------------------------------------------------------------------------
def test_utterance_predictions_keep_one_prediction_per_row() -> None:
    metric = UtterancePredictions()
    # As two ranks would see 5 rows padded to 6: rank 1 repeats row 10.
    metric.update(torch.tensor([10, 12, 14]), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]), torch.ones(3))
    metric.update(torch.tensor([11, 13, 10]), torch.tensor([1, 0, 0]), torch.tensor([1, 0, 0]), torch.ones(3))
    fold = metric.compute()
    assert fold["rows"].tolist() == [10, 11, 12, 13, 14]
    assert fold["predictions"].tolist() == [0, 1, 1, 0, 2]
    assert fold["targets"].tolist() == [0, 1, 1, 0, 1]


def test_select_folds() -> None:
    assert gather.select_folds(None, 3) == [0, 1, 2]
    assert gather.select_folds(2, 3) == [2]
    assert gather.select_folds([2, 0, 2], 3) == [0, 2]
    with pytest.raises(gather.GatherError, match="outside 0..2"):
        gather.select_folds([3], 3)


def test_only_folds_is_not_part_of_the_config_hash(tiny_config) -> None:
    assert training.config_hash(tiny_config()) == training.config_hash(tiny_config("cv.only_folds=[1]"))


def test_ddp_refuses_strategies_that_keep_predictions_in_workers() -> None:
    cfg = compose_config(["trainer=ddp", "trainer.devices=2", "trainer.strategy=ddp_spawn"])
    with pytest.raises(distributed.LaunchError, match="ddp_spawn"):
        distributed.check_launch(cfg)
    distributed.check_launch(compose_config(["trainer=ddp", "trainer.devices=2"]))


def fold_file(output_dir: Path, fold: int, config_hash: str, rows: list[int]) -> None:
    result = {"fold": fold, "test/uar": 0.5, "test/war": 0.5, "num_test": len(rows), "test_rows": rows}
    results.atomic_write_json({"config_hash": config_hash, "result": result}, results.fold_path(output_dir, fold))


def test_gather_needs_every_fold_of_one_configuration(tmp_path: Path) -> None:
    header = {"experiment": "x", "config_hash": "abc", "cv": {"strategy": "kfold", "folds": 2}, "folds": []}
    gather.write_header(tmp_path, header)
    fold_file(tmp_path, 0, "abc", [0, 1])
    with pytest.raises(gather.IncompleteError, match=r"not finished .*\[1\]"):
        gather.gather(tmp_path)
    assert gather.main([str(tmp_path)]) == 2 and not (tmp_path / "results.json").exists()
    fold_file(tmp_path, 1, "other", [2, 3])
    with pytest.raises(gather.GatherError, match="different configuration"):
        gather.gather(tmp_path)
    fold_file(tmp_path, 1, "abc", [1, 2])
    with pytest.raises(gather.GatherError, match="overlap"):
        gather.gather(tmp_path)
    fold_file(tmp_path, 1, "abc", [2, 3])
    assert gather.main([str(tmp_path)]) == 0
    record = results.read_json(tmp_path / "results.json")
    assert record["status"] == "complete" and [f["fold"] for f in record["folds"]] == [0, 1]
    assert record["summary"]["num_test_utterances"] == 4
    with pytest.raises(gather.GatherError, match="different configuration"):
        gather.write_header(tmp_path, {**header, "config_hash": "new"})
    assert gather.claim_summary(tmp_path) and not gather.claim_summary(tmp_path)


# -- DDP on one fold ------------------------------------------------------------------
def evaluate_on_one_device(
    cfg, checkpoint: Path, fold: int, accelerator: str = "cpu"
) -> tuple[list[list[int]], dict[str, float]]:
    """The confusion matrix and test metrics of `checkpoint` on `fold`, one process."""
    datamodule = training.build_datamodule(cfg)
    train_rows, test_rows = training.build_folds(cfg, datamodule)[fold]
    datamodule.set_fold(train_rows, test_rows)
    module = training.build_module(cfg, datamodule)
    module.load_state_dict(load_dict(checkpoint)["state_dict"])
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {key: float(trainer.callback_metrics[key]) for key in ("test/uar", "test/war", "test/loss")}
    return module.test_confusion_matrix().tolist(), metrics


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_ddp_counts_each_test_utterance_once(accelerator: str, tmp_path: Path, data_dir: Path) -> None:
    if accelerator == "gpu" and torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    output_dir = tmp_path / "ddp"
    completed = run_train_py(
        [
            "trainer=ddp", "trainer.devices=2", f"trainer.accelerator={accelerator}", *DDP_OVERRIDES,
            "logger=wandb", f"paths.data_dir={data_dir}", f"paths.output_dir={output_dir}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=tmp_path,
    )
    log = completed.stdout + completed.stderr
    assert "Starting with 2 processes" in log
    assert "gloo" in log if accelerator == "cpu" else "nccl" in log

    result = json.loads(results.fold_path(output_dir, 0).read_text())["result"]
    confusion = torch.tensor(result["confusion_matrix"])
    assert len(result["test_rows"]) == 7  # odd: the sampler repeated one utterance
    assert int(confusion.sum()) == result["num_test"] == 7
    # Only rank zero made a W&B run (one fold; the summary waits for the other folds).
    runs = offline_runs(output_dir)
    assert [(r["job_type"], r["name"][-6:]) for r in runs] == [("fold", "fold00")]
    assert runs[0]["summary"]["num_test"] == 7
    assert not (output_dir / "results.json").exists()

    cfg = compose_config([*DDP_OVERRIDES, "logger=none"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(tmp_path / "single")
    single_confusion, single = evaluate_on_one_device(
        cfg, output_dir / "checkpoints" / "fold_00" / "last.ckpt", fold=0, accelerator=accelerator
    )
    assert single_confusion == result["confusion_matrix"]
    # The loss is the sharp check: a repeated utterance would shift the mean. (GPU kernels
    # may round differently with another batch composition.)
    for key in ("test/uar", "test/war", "test/loss"):
        assert result[key] == pytest.approx(single[key], abs=1e-6 if accelerator == "cpu" else 1e-4)


# -- folds as parallel jobs ------------------------------------------------------------
@pytest.mark.slow
def test_fold_parallel_jobs_match_a_sequential_run(tiny_config, tmp_path: Path, data_dir: Path) -> None:
    sequential_dir = tmp_path / "sequential"
    cfg = tiny_config("trainer.deterministic=true", output_dir=sequential_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each parallel job, so the arithmetic is the same
    try:
        training.train(cfg)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    sequential = results.read_json(sequential_dir / "results.json")

    sweep_dir = tmp_path / "parallel"
    run_train_py(
        [
            # As users run it: progress bar on, W&B offline; two jobs share one directory.
            "-m", "+parallel=folds", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_DATA,
            "trainer.deterministic=true", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
    )
    assert sorted(p.name for p in (sweep_dir / "jobs").iterdir()) == ["0", "1"]  # one job per fold
    for job in ("0", "1"):  # Hydra's record of each job, written once the job held its fold
        assert (sweep_dir / "jobs" / job / ".hydra" / "overrides.yaml").is_file()
    # One W&B run per fold and one summary, from whichever job gathered the results.
    assert sorted(run["job_type"] for run in offline_runs(sweep_dir)) == ["fold", "fold", "summary"]
    parallel = results.read_json(sweep_dir / "results.json")
    assert parallel["status"] == "complete"
    assert len(parallel["folds"]) == len(sequential["folds"]) == 2
    for ours, reference in zip(parallel["folds"], sequential["folds"], strict=True):
        for key in ("fold", "test_rows", "training_seed", "num_test", "confusion_matrix"):
            assert ours[key] == reference[key], key
        for key in ("test/uar", "test/war"):  # from identical confusion matrices
            assert ours[key] == pytest.approx(reference[key], abs=1e-9), key
        # The loss is the sharp check: a different training run would differ by far more
        # than float32 rounding. A joblib worker may run another number of torch threads,
        # which reorders float32 reductions by a few ulps (3e-6 seen once on a ~2.0 loss).
        assert ours["test/loss"] == pytest.approx(reference["test/loss"], rel=1e-5)
    assert parallel["summary"] == pytest.approx(sequential["summary"])
    # The gather step by hand gives the same record.
    assert gather.gather(sweep_dir)["folds"] == parallel["folds"]
