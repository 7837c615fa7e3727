"""Scaling out: DDP on one fold (each test utterance counted once) and fold-parallel jobs."""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict

from ser.data.sampling import derived_seed
from ser.tracking import results
from ser.training import build, distributed, engine, gather, resume
from ser.training.checkpoint import load_dict
from ser.training.config import config_hash
from ser.training.metrics import UtterancePredictions
from ser.training.protocols.cross_validation import build_folds
from ser.training.selection import split_validation
from tests.helpers.cli_runs import (
    RUN_TIMEOUT,
    end_session,
    run_train_py,
    selected_cases,
    start_train_py,
    started_together,
)
from tests.helpers.config import TINY, TINY_DATA, compose_config, typed, typed_config
from tests.helpers.wandb_records import offline_runs

# A test fold of 7 utterances: 4 folds of the 28-utterance tiny corpus. On 2 processes
# the distributed sampler pads it to 8, repeating one utterance.
DDP_OVERRIDES = [
    *TINY_DATA, "cv.folds=4", "cv.only_folds=[0]", "dataset.batch_size=3", "trainer.deterministic=true",
]
DDP_LAUNCH = ["trainer=ddp", "trainer.devices=2"]


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


def test_each_ddp_rank_draws_its_own_dropout_masks() -> None:
    seeding = resume.EpochSeeding(7)

    def draw(rank: int) -> torch.Tensor:  # at epoch 2, batch 3
        seeding.on_train_batch_start(SimpleNamespace(current_epoch=2, global_rank=rank), None, None, 3)
        return torch.rand(16)

    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        assert not torch.equal(draw(0), draw(1))
        assert torch.equal(draw(1), draw(1))  # still fixed by where training is: resumable
        # Rank zero draws what a run on one device draws.
        one_device = torch.Generator().manual_seed(derived_seed(7, 2, 3, resume.DROPOUT_STREAM))
        assert torch.equal(draw(0), torch.rand(16, generator=one_device))
        # On a CPU module only the CPU generator is seeded: the same draws.
        cpu_module = SimpleNamespace(device=torch.device("cpu"))
        seeding.on_train_batch_start(SimpleNamespace(current_epoch=2, global_rank=0), cpu_module, None, 3)
        one_device = torch.Generator().manual_seed(derived_seed(7, 2, 3, resume.DROPOUT_STREAM))
        assert torch.equal(torch.rand(16), torch.rand(16, generator=one_device))
    random.setstate(states[0])
    np.random.set_state(states[1])


def test_select_folds() -> None:
    assert gather.select_folds(None, 3) == [0, 1, 2]
    assert gather.select_folds(2, 3) == [2]
    assert gather.select_folds([2, 0, 2], 3) == [0, 2]
    with pytest.raises(gather.GatherError, match="outside 0..2"):
        gather.select_folds([3], 3)


def test_only_folds_is_not_part_of_the_config_hash(tiny_config) -> None:
    assert config_hash(tiny_config()) == config_hash(tiny_config("cv.only_folds=[1]"))


def test_ddp_refuses_strategies_that_keep_predictions_in_workers() -> None:
    settings = typed_config(["trainer=ddp", "trainer.devices=2", "trainer.strategy=ddp_spawn"])
    with pytest.raises(distributed.LaunchError, match="ddp_spawn"):
        distributed.check_launch(settings.trainer)
    distributed.check_launch(typed_config(["trainer=ddp", "trainer.devices=2"]).trainer)


def fold_file(output_dir: Path, fold: int, config_hash: str, rows: list[int]) -> None:
    result = {"fold": fold, "test/uar": 0.5, "test/war": 0.5, "num_test": len(rows), "test_rows": rows}
    results.atomic_write_json({"config_hash": config_hash, "result": result}, results.fold_path(output_dir, fold))


def test_gather_needs_every_fold_of_one_configuration(tmp_path: Path) -> None:
    header = {"experiment": "x", "config_hash": "abc", "cv": {"strategy": "kfold", "folds": 2}, "folds": []}
    gather.write_header(tmp_path, header)
    fold_file(tmp_path, 0, "abc", [0, 1])
    with pytest.raises(gather.IncompleteError, match=r"not finished .*\[1\]"):
        gather.gather(tmp_path)
    assert gather.main([f"dir={tmp_path}"]) == 2 and not (tmp_path / "results.json").exists()
    fold_file(tmp_path, 1, "other", [2, 3])
    with pytest.raises(gather.GatherError, match="different configuration"):
        gather.gather(tmp_path)
    fold_file(tmp_path, 1, "abc", [1, 2])
    with pytest.raises(gather.GatherError, match="overlap"):
        gather.gather(tmp_path)
    fold_file(tmp_path, 1, "abc", [2, 3])
    assert gather.main([f"dir={tmp_path}"]) == 0
    record = results.read_json(tmp_path / "results.json")
    assert record["status"] == "complete" and [f["fold"] for f in record["folds"]] == [0, 1]
    assert record["summary"]["num_test_utterances"] == 4
    with pytest.raises(gather.GatherError, match="different configuration"):
        gather.write_header(tmp_path, {**header, "config_hash": "new"})
    assert gather.claim_summary(tmp_path) and not gather.claim_summary(tmp_path)


# -- features: one process extracts, the others read --------------------------------
def prepare_features_at_once(barrier, overrides: list[str], answers) -> None:
    """A DDP rank's start as torchrun or SLURM gives it: prepare the data at the same
    moment as the other ranks. Answers (features extracted here, a checksum)."""
    from ser.data.datamodule import CorpusDataModule

    extractions = []
    extract = CorpusDataModule._extract

    def counted(self, manifest):
        extractions.append(manifest)
        return extract(self, manifest)

    CorpusDataModule._extract = counted
    settings = typed_config(overrides)
    barrier.wait()
    datamodule = build.build_datamodule(settings)
    answers.put((len(extractions), float(datamodule.features.double().sum())))


@pytest.mark.slow
def test_processes_started_together_extract_the_features_once(tmp_path: Path, data_dir: Path) -> None:
    from ser.data.synthetic import SyntheticCorpusSettings, ensure_corpus

    overrides = [*TINY, "logger=none", f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config(overrides)
    ensure_corpus(cfg.dataset.root, SyntheticCorpusSettings(**cfg.dataset.generator))  # only features left
    context = multiprocessing.get_context("spawn")
    barrier, answers = context.Barrier(2), context.Queue()
    processes = [
        context.Process(target=prepare_features_at_once, args=(barrier, overrides, answers)) for _ in range(2)
    ]
    for process in processes:
        process.start()
    try:
        found = sorted(answers.get(timeout=RUN_TIMEOUT) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert [extracted for extracted, _ in found] == [0, 1]  # one extracted, the other read its cache
    assert found[0][1] == found[1][1]
    (cached,) = (tmp_path / "cache").iterdir()  # the cache file only: no lock file is left behind
    assert cached.name.startswith("features-") and cached.suffix == ".pt"


# -- DDP on one fold ------------------------------------------------------------------
EPOCHS = 5
# A validation split of 9 of the 21 training utterances: odd too, so one is repeated.
DDP_RUN = [*DDP_OVERRIDES, "cv.validation=0.4", f"trainer.max_epochs={EPOCHS}"]


def ddp_args(output_dir: Path, data_dir: Path, accelerator: str = "cpu") -> list[str]:
    return [
        *DDP_LAUNCH, f"trainer.accelerator={accelerator}", *DDP_RUN,
        f"paths.data_dir={data_dir}", f"hydra.run.dir={output_dir}",
    ]


def uninterrupted(output_dir: Path, data_dir: Path) -> tuple[Path, str]:
    return output_dir, run_train_py(ddp_args(output_dir, data_dir), cwd=output_dir.parent)


def killed_mid_fold(killed_dir: Path, data_dir: Path) -> tuple[Path, int | None]:
    """A DDP run SIGKILLed (both ranks, as a cluster ends a job) once fold 0 has its first
    checkpoint: (its output directory, its exit code)."""
    checkpoint = killed_dir / "checkpoints" / "fold_00" / "last.ckpt"
    process = start_train_py(ddp_args(killed_dir, data_dir), killed_dir.parent, killed_dir.parent / "killed.log")
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while process.poll() is None and not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        end_session(process)
    return killed_dir, process.returncode


def reported_command(run_dir: Path, data_dir: Path) -> Path:
    """The command of the DDP deadlock report (progress bar on by default), on the tiny corpus."""
    corpus = [o for o in TINY_DATA if o.startswith("dataset.")]
    run_train_py(
        [
            "dataset=synthetic", "model=timnet", "trainer.max_epochs=1", "cv.folds=2", "logger=none",
            "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", *corpus,
            f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
        ],
        cwd=run_dir.parent,
    )
    return run_dir


@pytest.fixture(scope="module")
def ddp_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[dict]:
    """The DDP runs on 2 gloo processes of the tests below, started together (two runs at a
    time), each in a folder of its own: the uninterrupted run of DDP_RUN, the same run
    killed mid-fold (to resume), the reported command."""
    resumed = test_a_ddp_run_killed_mid_fold_resumes_to_the_uninterrupted_result
    runs = {  # name: (the tests that need it, the run)
        "uninterrupted": ((test_ddp_with_default_settings_counts_each_utterance_once, resumed), uninterrupted),
        "killed": ((resumed,), killed_mid_fold),
        "reported": ((test_the_reported_ddp_command_completes,), reported_command),
    }
    commands = {
        name: partial(run, tmp_path_factory.mktemp(name) / "run", data_dir)
        for name, (tests, run) in runs.items() if any(selected_cases(request, test) for test in tests)
    }
    with started_together(commands) as started:
        yield started


@pytest.fixture(scope="module")
def ddp_cpu_run(ddp_runs: dict) -> tuple[Path, str]:
    """(output directory, output) of one uninterrupted DDP run on 2 gloo processes."""
    return ddp_runs["uninterrupted"].result()


def evaluate_on_one_device(checkpoint: Path, data_dir: Path, accelerator: str = "cpu") -> dict:
    """Fold 0's test confusion matrix, test and validation metrics of `checkpoint`, one process."""
    cfg = compose_config([*DDP_RUN, "logger=none"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(checkpoint.parent / "single")
    settings = typed(cfg)
    datamodule = build.build_datamodule(settings)
    train_rows, test_rows = build_folds(settings.cv, datamodule)[0]
    train_rows, validation_rows = split_validation(settings, datamodule, train_rows)
    datamodule.set_fold(train_rows, test_rows, validation_rows)
    module = build.build_module(settings, datamodule)
    module.load_state_dict(load_dict(checkpoint)["state_dict"])
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True,
    )
    scores = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    trainer.test(module, datamodule=datamodule, verbose=False)
    scores |= {key: float(trainer.callback_metrics[key]) for key in ("test/uar", "test/war", "test/loss")}
    scores["num_validation"] = len(validation_rows)
    return {"confusion_matrix": module.test_confusion_matrix().tolist()} | scores


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_ddp_with_default_settings_counts_each_utterance_once(
    accelerator: str, request: pytest.FixtureRequest, tmp_path: Path, data_dir: Path
) -> None:
    """Progress bar on, W&B offline: it completes (it used to deadlock), and the test and
    validation metrics are those of a one-device evaluation of the same weights."""
    if accelerator == "gpu":
        if torch.cuda.device_count() < 2:
            pytest.skip("needs two CUDA devices")
        output_dir = tmp_path / "ddp"
        log = run_train_py(ddp_args(output_dir, data_dir, accelerator), cwd=tmp_path)
    else:
        output_dir, log = request.getfixturevalue("ddp_cpu_run")
    assert "Starting with 2 processes" in log
    assert "gloo" in log if accelerator == "cpu" else "nccl" in log

    result = json.loads(results.fold_path(output_dir, 0).read_text())["result"]
    confusion = torch.tensor(result["confusion_matrix"])
    assert len(result["test_rows"]) == 7  # odd: the sampler repeated one utterance
    assert int(confusion.sum()) == result["num_test"] == 7
    assert result["num_validation"] == 9 and result["epochs"] == EPOCHS
    # Only rank zero made a W&B run (one fold; the summary waits for the other folds).
    runs = offline_runs(output_dir)
    assert [(r["job_type"], r["name"][-6:]) for r in runs] == [("fold", "fold00")]
    assert runs[0]["summary"]["num_test"] == 7
    assert not (output_dir / "results.json").exists()

    checkpoint = output_dir / "checkpoints" / "fold_00" / "last.ckpt"
    single = evaluate_on_one_device(checkpoint, data_dir, accelerator)
    assert single["confusion_matrix"] == result["confusion_matrix"]
    assert single["num_validation"] == result["num_validation"]
    # The losses are the sharp check: a repeated utterance would shift the mean. (GPU
    # kernels may round differently with another batch composition.)
    for key in ("test/uar", "test/war", "test/loss", "val/uar", "val/war", "val/loss"):
        assert result[key] == pytest.approx(single[key], abs=1e-6 if accelerator == "cpu" else 1e-4), key


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_a_ddp_run_killed_mid_fold_resumes_to_the_uninterrupted_result(
    ddp_cpu_run: tuple[Path, str], ddp_runs: dict, tmp_path: Path, data_dir: Path
) -> None:
    reference_dir, _ = ddp_cpu_run
    killed_dir, returncode = ddp_runs["killed"].result()
    checkpoint = killed_dir / "checkpoints" / "fold_00" / "last.ckpt"
    assert returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not results.fold_path(killed_dir, 0).exists(), "the kill came after the fold had finished"
    killed_epoch = resume.checkpoint_epoch(checkpoint)
    assert killed_epoch < EPOCHS - 1

    output = run_train_py(ddp_args(killed_dir, data_dir), cwd=tmp_path)

    assert "fold 0 resumes from" in output
    resumed = results.read_json(results.fold_path(killed_dir, 0))["result"]
    reference = results.read_json(results.fold_path(reference_dir, 0))["result"]
    assert resumed["resumed_from_epoch"] == killed_epoch
    for key in (
        "test/uar", "test/war", "test/loss", "confusion_matrix", "test_rows", "epochs",
        "val/uar", "val/war", "val/loss", "validation_rows",
    ):
        assert resumed[key] == reference[key], key
    final = weights(checkpoint)
    expected = weights(reference_dir / "checkpoints" / "fold_00" / "last.ckpt")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)


@pytest.mark.slow
def test_the_reported_ddp_command_completes(ddp_runs: dict) -> None:
    """The command of the DDP deadlock report (progress bar on by default), on the tiny corpus."""
    run_dir = ddp_runs["reported"].result()
    record = results.read_json(run_dir / "results.json")
    assert record["status"] == "complete" and [f["fold"] for f in record["folds"]] == [0, 1]
    rows = sorted(row for fold in record["folds"] for row in fold["test_rows"])
    assert rows == list(range(28))  # each utterance tested once, in one fold
    assert [f["num_test"] for f in record["folds"]] == [14, 14]


# -- folds as parallel jobs ------------------------------------------------------------
@pytest.mark.slow
def test_fold_parallel_jobs_match_a_sequential_run(tiny_config, tmp_path: Path, data_dir: Path) -> None:
    sequential_dir = tmp_path / "sequential"
    # One fold after another against one fold per job: the same computation per fold.
    cfg = tiny_config("trainer.deterministic=true", "cv.stack=false", output_dir=sequential_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each parallel job, so the arithmetic is the same
    try:
        engine.train(cfg)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    sequential = results.read_json(sequential_dir / "results.json")

    sweep_dir = tmp_path / "parallel"
    run_train_py(
        [
            # As users run it: progress bar on, W&B offline; two jobs share one directory.
            "-m", "+parallel=folds", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_DATA,
            "trainer.deterministic=true", "cv.stack=false", f"paths.data_dir={data_dir}",
            f"hydra.sweep.dir={sweep_dir}",
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
