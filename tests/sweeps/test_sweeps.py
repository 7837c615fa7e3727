"""Sweeps: Hydra multirun over the switches, sweep.py, launchers, Optuna, GPU per process.

The slow tests run the real command lines on the tiny corpus (tests/conftest.py TINY_DATA)
in subprocesses with the CLI's defaults (progress bar on, W&B offline); the rest compose
configs or call the helpers directly.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from ser.data.feature_kinds import feature_settings
from ser.sweeps import callbacks, launch
from ser.tracking import provenance
from ser.training.checkpoint import load_dict
from ser.training.protocols.cross_validation import experiment_name
from tests.helpers.cli_runs import selected_probes, started_together
from tests.helpers.config import ROOT, TINY_DATA, cli_environment, compose_config, typed_config
from tests.helpers.ssl_models import save_random_weights
from tests.helpers.wandb_records import offline_runs


def command_line(
    *args: str, timeout: int = 300, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = cli_environment(OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1", **(environment or {}))
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


ABLATION = ["baseline", "square_kernels", "no_se", "avgpool", "dropout", "tabs_6", "tabs_8", "tabs_12", "timnet"]


def tiny(data_dir: Path) -> list[str]:
    """A tiny run as users start one: progress bar on, the default logger (W&B offline)."""
    return [*TINY_DATA, f"paths.data_dir={data_dir}"]


def read_results(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """results.json of each job, by subdirectory name."""
    return {path.parent.name: json.loads(path.read_text()) for path in sweep_dir.glob("*/results.json")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


# --------------------------------------------------------------------------- real sweeps


def two_by_two(folder: Path, data_dir: Path) -> Path:
    sweep_dir = folder / "sweep"
    command_line(
        "train.py", "-m", "model=mssenet,timnet", "model/se=on,off", *tiny(data_dir),
        f"hydra.sweep.dir={sweep_dir}",
    )
    return sweep_dir


def ablation(folder: Path, data_dir: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    sweep_dir = folder / "ablation"
    # The tiny corpus with the models' own block counts (the points set them).
    settings = [o for o in tiny(data_dir) if not o.startswith("model.net.num_blocks=")]
    printed = command_line("sweep.py", "run", "ablation", "--report", "--no-wandb", *settings,
                           f"hydra.sweep.dir={sweep_dir}", timeout=900)
    return sweep_dir, printed


def features_through_submitit(folder: Path, data_dir: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    sweep_dir = folder / "features"
    # features=ssl's weights (WavLM Base+'s architecture, random) as an offline cluster has them.
    weights = save_random_weights("WAVLM_BASE_PLUS", folder / "wavlm_base_plus.pt")
    printed = command_line(
        "sweep.py", "run", "features", "--report", "--baseline", "features=mfcc", "--no-wandb",
        *tiny(data_dir), "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}", environment={"SER_SSL_WEIGHTS": str(weights)},
    )
    return sweep_dir, printed


def hpo_settings(folder: Path, data_dir: Path) -> list[str]:
    # Four clips per class and speaker: enough for a stratified validation split.
    return [*tiny(data_dir), f"hydra.sweep.dir={folder / 'hpo'}", "hydra.sweeper.sampler.seed=7",
            "dataset.generator.utterances_per_class_per_speaker=4",
            f"dataset.root={folder / 'synthetic4'}", "cv.validation=0.3"]


def optuna_study(folder: Path, data_dir: Path) -> tuple[Path, list[str]]:
    """The first two trials of the search (the test resumes it): (its sweep dir, its settings)."""
    settings = hpo_settings(folder, data_dir)
    command_line("train.py", "+sweep=hpo", *settings, "hydra.sweeper.n_trials=2")
    return folder / "hpo", settings


@pytest.fixture(scope="module")
def sweeps(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[dict]:
    """The sweeps of the tests below, started together (two sweeps at a time), each in a
    folder of its own: {test: what its sweep returns}."""
    sweeps = (
        (test_two_by_two_multirun_then_report, two_by_two),
        (test_the_ablation_sweep_runs_its_nine_points_and_reports_them_by_name, ablation),
        (test_sweep_py_runs_a_named_sweep_through_submitit_local, features_through_submitit),
        (test_optuna_search_maximises_uar_in_a_resumable_sqlite_study, optuna_study),
    )
    with started_together(selected_probes(request, tmp_path_factory, sweeps, data_dir)) as started:
        yield started


@pytest.mark.slow
def test_two_by_two_multirun_then_report(sweeps: dict) -> None:
    sweep_dir = sweeps["test_two_by_two_multirun_then_report"].result()
    runs = read_results(sweep_dir)
    assert sorted(runs) == ["0", "1", "2", "3"]  # one subdirectory per job
    combinations = [(r["hydra"]["choices"]["model"], r["hydra"]["choices"]["model/se"]) for r in runs.values()]
    assert sorted(combinations) == sorted(itertools.product(["mssenet", "timnet"], ["on", "off"]))
    for name, run in runs.items():
        assert run["status"] == "complete"
        assert f"model={run['hydra']['choices']['model']}" in run["hydra"]["overrides"]
        # Hydra's record of each job, written by the job once it held its directory.
        job_overrides = OmegaConf.load(sweep_dir / name / ".hydra" / "overrides.yaml")
        assert list(job_overrides) == run["hydra"]["overrides"]
        # The default logger: one offline W&B run per fold and a summary, in the job's folder.
        assert sorted(r["job_type"] for r in offline_runs(sweep_dir / name)) == ["fold", "fold", "summary"]
        # The W&B group: corpus, model variant, features.
        assert run["experiment"] == f"synthetic-{run['config']['variant']}-mfcc"
    assert len({run["experiment"] for run in runs.values()}) == 3  # TIM-Net has no SE switch

    printed = command_line("sweep.py", "report", str(sweep_dir), "--baseline", "model=mssenet model/se=on")
    assert "model=mssenet model/se=on (baseline)" in printed.stdout
    rows = read_csv(sweep_dir / "report.csv")
    assert len(rows) == 4
    by_label = {row["row"]: row for row in rows}
    for run in runs.values():
        choices = run["hydra"]["choices"]
        row = by_label.pop(f"model={choices['model']} model/se={choices['model/se']}")
        assert row["corpus"] == "synthetic" and row["folds"] == "2" and row["runs"] == "1"
        for key in ("test/uar_mean", "test/uar_std", "test/war_mean", "test/war_std"):
            assert float(row[key]) == pytest.approx(run["summary"][key], rel=1e-12, abs=1e-15), key
    assert not by_label
    markdown = (sweep_dir / "report.md").read_text()
    assert markdown.count("| model=") == 4 + 3 + 3  # score table, then UAR and WAR tests
    assert (sweep_dir / "report.png").stat().st_size > 1000
    assert list((sweep_dir / "wandb").glob("offline-run-*"))  # the report's W&B run


@pytest.mark.slow
def test_the_ablation_sweep_runs_its_nine_points_and_reports_them_by_name(sweeps: dict) -> None:
    sweep_dir, printed = sweeps["test_the_ablation_sweep_runs_its_nine_points_and_reports_them_by_name"].result()
    runs = read_results(sweep_dir)
    assert sorted(runs, key=int) == [str(k) for k in range(len(ABLATION))]
    assert [runs[str(k)]["config"]["ablation"] for k in range(len(ABLATION))] == ABLATION
    assert len({run["variant"] for run in runs.values()}) == len(ABLATION)
    rows = read_csv(sweep_dir / "report.csv")
    assert [row["row"] for row in rows] == [f"ablation={name}" for name in ABLATION]
    assert rows[0]["baseline"] == "True"  # found by the default baseline, the paper's MS-SENet
    assert "ablation=baseline (baseline)" in printed.stdout


@pytest.mark.slow
def test_sweep_py_runs_a_named_sweep_through_submitit_local(sweeps: dict) -> None:
    sweep_dir, printed = sweeps["test_sweep_py_runs_a_named_sweep_through_submitit_local"].result()
    assert "+sweep=features" in printed.stdout
    assert (sweep_dir / ".submitit").is_dir()
    runs = read_results(sweep_dir)
    assert sorted(run["config"]["features"]["kind"] for run in runs.values()) == ["logmel", "mfcc", "ssl"]
    widths = {"logmel": 128, "mfcc": 39, "ssl": 768}
    for name, run in runs.items():
        checkpoint = load_dict(sweep_dir / name / "checkpoints" / "fold_00" / "last.ckpt")
        width = feature_settings(run["config"]["features"], signal_length=16000).num_features
        assert checkpoint["hyper_parameters"]["metadata"]["net"]["input_dim"] == width
        assert width == widths[run["config"]["features"]["kind"]]
    rows = read_csv(sweep_dir / "report.csv")
    assert [row["row"] for row in rows] == ["features=mfcc", "features=logmel", "features=ssl"]
    assert rows[1]["pairs"] == rows[2]["pairs"] == "2"


@pytest.mark.slow
def test_optuna_search_maximises_uar_in_a_resumable_sqlite_study(sweeps: dict) -> None:
    import optuna

    sweep_dir, settings = sweeps["test_optuna_search_maximises_uar_in_a_resumable_sqlite_study"].result()
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="synthetic-mssenet-mfcc", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(study.trials) == 2
    runs = read_results(sweep_dir)
    assert len(runs) == 2
    # The search maximises validation UAR: the test folds choose nothing.
    for run in runs.values():
        assert run["config"]["objective"] == "val/uar" and run["config"]["cv"]["validation"] == 0.3
    uars = sorted(run["summary"]["val/uar_mean"] for run in runs.values())
    assert sorted(trial.value for trial in study.trials) == pytest.approx(uars)
    for trial in study.trials:
        assert 1e-4 <= trial.params["model.optimizer.lr"] <= 1e-2
        assert 0.0 <= trial.params["model.net.block_dropout"] <= 0.3
        assert "model.net.num_blocks" not in trial.params  # fixed on the command line
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(uars))

    # The same command resumes the study; the new trial gets its own directory.
    command_line("sweep.py", "run", "hpo", *settings, "hydra.sweeper.n_trials=1")
    study = optuna.load_study(study_name="synthetic-mssenet-mfcc", storage=storage)
    assert len(study.trials) == 3
    assert len(read_results(sweep_dir)) == 3


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", sorted(launch.available_sweeps()))
def test_every_named_sweep_composes_as_a_multirun(name: str) -> None:
    cfg = compose_config([f"+sweep={name}"] + (["hydra.sweeper.n_trials=1"] if name == "hpo" else []))
    assert "sweep" not in cfg  # @package _global_: nothing of it lands in the job config
    assert launch.sweep_command(name, ["a=1"], python="python")[1:] == [
        "-m", "ser.training", "--multirun", f"+sweep={name}", "a=1",
    ]


def hydra_config(overrides: list[str]) -> Any:
    from ser.conf import compose

    return compose(overrides, return_hydra_config=True)


def test_sweeps_set_multirun_mode_and_their_parameters() -> None:
    ablation = hydra_config(["+sweep=ablation"]).hydra
    assert ablation.mode.name == "MULTIRUN"
    assert ablation.sweeper._target_ == "hydra_plugins.ser_sweepers.points.PointsSweeper"
    assert list(ablation.sweeper.points) == ABLATION and ablation.sweeper.label == "ablation"
    assert hydra_config(["+sweep=seeds"]).hydra.sweeper.params.seed.count(",") == 4
    assert hydra_config(["+sweep=features"]).hydra.sweeper.params.features == "mfcc,logmel,ssl"
    corpora = hydra_config(["+sweep=corpora"]).hydra.sweeper.params.dataset.split(",")
    assert corpora == ["casia", "emodb", "emovo", "iemocap", "ravdess", "savee"]


@pytest.mark.parametrize("corpus", ["casia", "emodb", "emovo", "iemocap", "ravdess", "savee"])
def test_corpora_sweep_reads_each_corpus_under_the_data_dir(corpus: str) -> None:
    cfg = compose_config(["+sweep=corpora", f"dataset={corpus}", "paths.data_dir=/corpora"])
    assert cfg.dataset.corpus == corpus
    assert cfg.dataset.root == f"/corpora/{corpus}"


def test_hpo_maximises_into_a_sqlite_study_in_the_sweep_dir() -> None:
    sweeper = hydra_config(["+sweep=hpo"]).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize"
    assert sweeper.study_name == "synthetic-mssenet-mfcc"
    assert sweeper.storage == "sqlite:///multirun/hpo/synthetic-mssenet-mfcc/optuna.db"
    assert set(sweeper.params) == {"model.optimizer.lr", "model.net.block_dropout", "model.net.num_blocks"}


def ablation_jobs(*arguments: str) -> list[list[str]]:
    """The overrides of each job that `sweep.py run ablation ARGUMENTS` launches."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate

    sweeper = instantiate(hydra_config(["+sweep=ablation"]).hydra.sweeper)
    overrides = OverridesParser.create().parse_overrides(["+sweep=ablation", *arguments])
    return [job for batch in sweeper.split_arguments(overrides, sweeper.max_batch_size) for job in batch]


def job_config(job: list[str]) -> Any:
    """A job's config (its overrides without the sweep that launched it)."""
    return compose_config([o for o in job if not o.startswith("+sweep=")])


def test_the_ablation_sweep_is_nine_named_points_of_the_models_own_switches() -> None:
    jobs = ablation_jobs("dataset=iemocap", "seed=1,2")
    assert len(jobs) == 2 * len(ABLATION)  # every point with every seed
    configs = {}
    for job in jobs:
        cfg = job_config(job)
        assert cfg.seed in (1, 2) and cfg.dataset.corpus == "iemocap"
        configs.setdefault(cfg.ablation, cfg)
    assert list(configs) == ABLATION
    assert configs["baseline"].variant == "mssenet-paper-se_on-spatial_dropout-tab10"
    assert configs["square_kernels"].model.net.kernel_sizes == [[3, 3]]
    assert configs["no_se"].model.net.squeeze_excitation is False
    assert configs["avgpool"].model.net.branch_regularizer == "avgpool"
    assert configs["dropout"].model.net.branch_regularizer == "dropout"
    assert [configs[f"tabs_{n}"].model.net.num_blocks for n in (6, 8, 12)] == [6, 8, 12]
    assert configs["timnet"].model.net._target_ == "ser.models.TIMNet"
    assert configs["timnet"].model.net.num_blocks == 10  # TIM-Net's own count on IEMOCAP
    names = {experiment_name(typed_config([o for o in job if not o.startswith("+sweep=")])) for job in jobs}
    assert len(names) == len(ABLATION)
    # A point's own setting wins over the same setting given for every job.
    blocks = [job_config(job).model.net.num_blocks for job in ablation_jobs("model.net.num_blocks=4")]
    assert blocks == [4, 4, 4, 4, 4, 6, 8, 12, 4]
    assert not (ROOT / "ser" / "conf" / "ablation").exists()  # the points are the groups' own
    assert set(launch.available_sweeps()) >= {"ablation", "seeds", "corpora", "features", "hpo"}


@pytest.mark.parametrize(("choice", "enabled"), [("on", True), ("off", False)])
def test_se_on_and_off_are_option_names_not_booleans(choice: str, enabled: bool) -> None:
    cfg = compose_config([f"model/se={choice}"])
    assert cfg.fusion.se.name == choice
    assert cfg.model.net.squeeze_excitation is enabled
    assert f"se_{choice}" in cfg.variant


def test_logmel_features_are_n_mels_wide() -> None:
    logmel = compose_config(["features=logmel"]).features
    assert feature_settings(logmel, signal_length=96000).num_features == logmel.n_mels == 128
    assert feature_settings(compose_config([]).features, signal_length=96000).num_features == 39


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("basic", "BasicLauncher"),
        ("joblib", "JoblibLauncher"),
        ("parallel", "JoblibLauncher"),
        ("submitit_local", "LocalLauncher"),
        ("submitit_slurm", "SlurmLauncher"),
        ("slurm", "SlurmLauncher"),
    ],
)
def test_launchers_compose(launcher: str, target: str) -> None:
    cfg = hydra_config([f"hydra/launcher={launcher}"]).hydra
    assert cfg.launcher._target_.endswith(target)
    assert "gpu_slots" in cfg.callbacks and "sweep_directory" in cfg.callbacks
    if launcher == "parallel":
        assert cfg.launcher.n_jobs == 2
    if launcher == "slurm":
        assert cfg.launcher.gpus_per_node == 1
        assert cfg.launcher.array_parallelism == 16
        assert cfg.launcher.timeout_min == 720


# --------------------------------------------------------------------------- helpers


def test_hydra_job_info_is_empty_outside_hydra() -> None:
    assert provenance.hydra_job_info() == {"choices": {}, "overrides": [], "job_num": None}


def test_claim_device_takes_free_gpus_then_shares(tmp_path: Path) -> None:
    first = callbacks.claim_device(["0", "1"], tmp_path)
    second = callbacks.claim_device(["0", "1"], tmp_path)
    third = callbacks.claim_device(["0", "1"], tmp_path)
    try:
        assert (first.device, first.shared) == ("0", False)
        assert (second.device, second.shared) == ("1", False)
        assert third.shared and third.device in ("0", "1")
        first.release()  # a finished process frees its GPU
        again = callbacks.claim_device(["0", "1"], tmp_path)
        assert (again.device, again.shared) == ("0", False)
        again.release()
    finally:
        for claim in (first, second, third):
            claim.release()


def test_slots_fill_every_gpu_before_sharing_one(tmp_path: Path) -> None:
    """Ten fold jobs on two GPUs with five slots each: five per GPU, never six on one."""
    claims = [callbacks.claim_device(["0", "1"], tmp_path, slots_per_device=5) for _ in range(10)]
    try:
        devices = [claim.device for claim in claims]
        assert devices == ["0", "1"] * 5  # first slots of both before any second slot
        assert not any(claim.shared for claim in claims)
        extra = callbacks.claim_device(["0", "1"], tmp_path, slots_per_device=5)
        assert extra.shared  # an eleventh job oversubscribes
        claims[4].release()  # a finished job frees its slot on GPU 0
        again = callbacks.claim_device(["0", "1"], tmp_path, slots_per_device=5)
        assert (again.device, again.shared) == ("0", False)
        claims.append(again)
    finally:
        for claim in claims:
            claim.release()


@pytest.mark.parametrize(
    ("jobs_per_gpu", "jobs", "gpus", "slots"),
    [("auto", 10, 1, 10), ("auto", 4, 1, 4), ("auto", 10, 4, 3), ("auto", 2, 2, 1), (3, 10, 1, 3)],
)
def test_slots_per_gpu(jobs_per_gpu: int | str, jobs: int, gpus: int, slots: int) -> None:
    assert callbacks.slots_per_gpu(jobs_per_gpu, jobs, gpus) == slots


def test_parallel_jobs_reads_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert callbacks.parallel_jobs(OmegaConf.create({})) == 1
    assert callbacks.parallel_jobs(OmegaConf.create({"hydra": {"launcher": {"n_jobs": 10}}})) == 10
    assert callbacks.parallel_jobs(OmegaConf.create({"hydra": {"launcher": {"n_jobs": -1}}})) == 16


def test_fold_jobs_share_one_gpu_and_split_the_cores(
    fresh_process: callbacks.GpuSlots, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """`hydra.launcher.n_jobs=4` on a one-GPU machine: four job processes on GPU 0, each
    with a quarter of the cores; a fifth process finds the slots held and shares."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    threads = torch.get_num_threads()
    job = OmegaConf.create({"trainer": {"accelerator": "auto"}, "hydra": {"launcher": {"n_jobs": 4}}})
    held = [callbacks.claim_device(["0"], tmp_path / "locks", slots_per_device=4) for _ in range(3)]
    try:
        fresh_process.on_job_start(job)  # the fourth job process
        claim = callbacks._process_claim
        assert claim is not None and (claim.device, claim.shared) == ("0", False)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert torch.get_num_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"
        extra = callbacks.claim_device(["0"], tmp_path / "locks", slots_per_device=4)
        assert extra.shared
    finally:
        torch.set_num_threads(threads)
        for claim in held:
            claim.release()


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[callbacks.GpuSlots]:
    """The callback as a new job process sees it: no GPU chosen, CUDA not started."""
    monkeypatch.setattr(callbacks, "_process_claim", None)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    yield callbacks.GpuSlots(lock_dir=str(tmp_path / "locks"))
    if callbacks._process_claim is not None:
        callbacks._process_claim.release()


def test_each_job_process_gets_a_free_gpu(
    fresh_process: callbacks.GpuSlots, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    held = callbacks.claim_device(["3"], tmp_path / "locks")  # another worker holds GPU 3
    try:
        fresh_process.on_job_start(OmegaConf.create({"trainer": {"accelerator": "auto"}}))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
        # Later jobs of the same process keep its GPU.
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
        fresh_process.on_job_start(OmegaConf.create({}))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
        assert callbacks._process_claim is not None and callbacks._process_claim.device == "5"
    finally:
        held.release()


@pytest.mark.parametrize(
    ("visible", "trainer"),
    [
        ("0", {"accelerator": "auto"}),  # one GPU: nothing to choose
        ("", {"accelerator": "auto"}),  # none
        ("0,1", {"accelerator": "cpu"}),
        ("0,1", {"strategy": "ddp", "devices": "auto"}),  # data-parallel jobs need every GPU
        ("0,1", {"devices": 2}),
        ("0,1", {"devices": 1, "num_nodes": 2}),
    ],
)
def test_single_gpu_cpu_and_data_parallel_jobs_are_left_alone(
    fresh_process: callbacks.GpuSlots, monkeypatch: pytest.MonkeyPatch, visible: str,
    trainer: dict[str, Any],
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fresh_process.on_job_start(OmegaConf.create({"trainer": trainer}))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == visible
    assert callbacks._process_claim is None


def test_unknown_sweep_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sweep 'nope'; available: ablation"):
        launch.sweep_command("nope", [])


def test_a_sweeper_or_launcher_of_an_extra_that_is_not_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    chosen = ["+sweep=hpo", "hydra/launcher=parallel", "hydra/launcher=slurm", "hydra/launcher=submitit_local"]
    assert launch.missing_extra(chosen) is None  # the dev extra installs them all
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda module: None)
    with pytest.raises(ValueError, match=r"pip install 'ser\[optuna\]'"):
        launch.sweep_command("hpo", [])
    with pytest.raises(ValueError, match="the optuna sweeper is not installed"):
        launch.sweep_command("seeds", ["hydra/sweeper=optuna"])
    for launcher in ("parallel", "joblib", "slurm", "submitit_local", "submitit_slurm"):
        with pytest.raises(ValueError, match=rf"the {launcher} launcher .*pip install 'ser\[cluster\]'"):
            launch.sweep_command("seeds", [f"hydra/launcher={launcher}"])
    assert launch.missing_extra(["+sweep=ablation", "hydra/launcher=basic"]) is None  # Hydra's own
    # ser-train (and train.py) says the same in one line, exit code 2, before Hydra starts.
    from ser import commands

    monkeypatch.setattr(sys, "argv", ["ser-train", "-m", "+parallel=folds", "hydra/launcher=slurm"])
    with pytest.raises(SystemExit) as exit_code:
        commands.train()
    assert exit_code.value.code == 2
    said = capsys.readouterr().err.strip()
    assert said == "error: hydra/launcher=slurm: the slurm launcher is not installed: pip install 'ser[cluster]'"
