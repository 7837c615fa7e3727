"""One checkpoint loader (ser.training.checkpoint): nothing a checkpoint holds can run code, on
every path that reads one (resume, predict, export), and networks come from the registry."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from ser.models import registry
from ser.tools.inference import load_checkpoint
from ser.tracking.results import read_json
from ser.training import resume
from ser.training.checkpoint import (
    CHECKPOINT_TYPES,
    CheckpointError,
    checkpoint_epoch,
    load_dict,
    read_checkpoint,
)
from ser.training.config import config_hash
from ser.training.implementation import resolve_for_run
from tests.helpers.audio_files import write_noise
from tests.helpers.cli_runs import selected_cases, started_together
from tests.helpers.config import ROOT, TINY, compose_config, typed_config


class LeavesATrace:
    """Unpickling this runs os.mkdir(marker): the marker's existence proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.marker,)


def pickle_bearing_checkpoint(path: Path, marker: Path, saved_hash: str) -> Path:
    """A last.ckpt of the right configuration that also holds a code-running pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"ser_metadata": {"config_hash": saved_hash}, "epoch": 0, "state_dict": {},
         "callbacks": {"x": LeavesATrace(marker)}},
        path,
    )
    return path


def test_resume_never_unpickles_a_pickle_bearing_last_ckpt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "code-ran"
    path = pickle_bearing_checkpoint(tmp_path / "fold_00" / "last.ckpt", marker, "abc")
    with caplog.at_level("WARNING"):
        assert resume.resumable_checkpoint(path.parent, "abc") is None
    assert not marker.exists()
    said = caplog.text
    assert f"not resuming from {path}" in said and "starts afresh" in said
    assert "posix.mkdir" in said  # the reason: what the pickle would have called
    with pytest.raises(CheckpointError, match="pickled objects"):
        resume.checkpoint_epoch(path)
    with pytest.raises(CheckpointError, match="pickled objects"):  # Lightning's own load
        resume.AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()


def over_a_pickle_bearing_checkpoint(folder: Path, data_dir: Path) -> tuple[Path, Path, Path, subprocess.CompletedProcess[str]]:
    """`python train.py` over a planted pickle-bearing last.ckpt of its own configuration:
    (its output directory, the marker the pickle would make, the planted file, the process)."""
    run_dir, marker = folder / "run", folder / "code-ran"
    overrides = [o for o in TINY if o != "progress=false"]
    cfg = compose_config(overrides)
    with open_dict(cfg):  # where files go is not part of the hash; it must only resolve
        cfg.paths.data_dir, cfg.paths.output_dir = str(data_dir), str(run_dir)
    planted = pickle_bearing_checkpoint(
        run_dir / "checkpoints" / "fold_00" / "last.ckpt", marker, config_hash(cfg)
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"paths.data_dir={data_dir}",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    return run_dir, marker, planted, done


def tool_on_a_forged_network(
    folder: Path, trained: Path, forgery: str, tool: str
) -> tuple[Path, Path, Path, subprocess.CompletedProcess[str]]:
    """`ser-predict` or `ser-export` on `trained` with its network described by `forgery`:
    (the marker the forgery would make, the forged file, export's output, the process)."""
    marker = folder / "code-ran"
    net = read_checkpoint(trained)["ser_metadata"]["net"]
    forged = forged_checkpoint(trained, folder, FORGERIES[forgery](net, marker))
    out = folder / "model.onnx"
    arguments = (
        [f"audio={write_noise(folder / 'ok.wav')}"] if tool == "predict"
        else ["format=onnx", f"out={out}"]
    )
    return marker, forged, out, subprocess.run(
        [sys.executable, "-m", f"ser.tools.{tool}", f"checkpoint={forged}", *arguments],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def command_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[dict]:
    """The processes of test_train_py_starts_a_fold_afresh_over_a_pickle_bearing_checkpoint
    and of each case of test_predict_and_export_refuse_a_forged_network_without_building_anything,
    started together (two at a time), each in a folder of its own: {test or case id: what
    its probe returns}."""
    commands = {}
    if selected_cases(request, test_train_py_starts_a_fold_afresh_over_a_pickle_bearing_checkpoint):
        commands["pickle"] = partial(over_a_pickle_bearing_checkpoint, tmp_path_factory.mktemp("pickle"), data_dir)
    cases = selected_cases(request, test_predict_and_export_refuse_a_forged_network_without_building_anything)
    if cases:
        trained = request.getfixturevalue("trained_checkpoint")
        for case, params in cases.items():
            folder = tmp_path_factory.mktemp("forged")
            commands[case] = partial(tool_on_a_forged_network, folder, trained, params["forgery"], params["tool"])
    with started_together(commands) as started:
        yield started


@pytest.mark.slow
def test_train_py_starts_a_fold_afresh_over_a_pickle_bearing_checkpoint(command_runs: dict) -> None:
    """As a user runs it (progress bar on, W&B offline): the run says it does not resume
    from the planted file and why, trains the fold, and the pickle never runs."""
    run_dir, marker, planted, done = command_runs["pickle"].result()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not marker.exists()
    assert f"not resuming from {planted}" in output and "starts afresh" in output
    assert "resumes from" not in output
    assert read_json(run_dir / "results.json")["status"] == "complete"
    assert read_checkpoint(planted)["epoch"] == 0  # replaced by the fold's own, safe checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["false", "true"])
def test_every_checkpoint_a_run_writes_loads_with_the_allow_list(tmp_path: Path, tiny_config, stack: str) -> None:
    """last.ckpt and best.ckpt with early stopping and a validation split, folds trained one
    after another (Lightning's checkpoints) or stacked (cv.stack, written per fold): what the
    allow-list must cover (loops, callbacks, optimiser state, hyperparameters)."""
    from ser.training.engine import train

    cfg = tiny_config(
        "cv.validation=0.5", "cv.select=best_val_uar", "callbacks=early_stopping",
        "trainer.max_epochs=2", f"cv.stack={stack}", output_dir=tmp_path / "run",
    )
    with open_dict(cfg):  # a validation split needs more than one utterance per class
        cfg.dataset.generator.utterances_per_class_per_speaker = 4
        cfg.paths.data_dir = str(tmp_path / "data")
    train(cfg)
    written = sorted((tmp_path / "run" / "checkpoints").rglob("*.ckpt"))
    assert [p.name for p in written] == ["best.ckpt", "last.ckpt"] * 2
    for path in written:
        checkpoint = read_checkpoint(path)
        assert checkpoint["ser_metadata"]["net"]["name"] == "mssenet"
        # A stacked fold's checkpoint holds no Lightning loop state (its Trainer is shared).
        expected = {"callbacks", "optimizer_states", "hyper_parameters"} | ({"loops"} if stack == "false" else set())
        assert expected <= set(checkpoint)
        assert checkpoint_epoch(path) in (0, 1)
        assert isinstance(load_checkpoint(path).net, torch.nn.Module)


@pytest.mark.parametrize(
    "value",
    [torch.float32, torch.Size([3]), Path("/tmp")],
    ids=["dtype", "size", "path"],
)
def test_anything_outside_the_allow_list_is_refused(value: object, tmp_path: Path) -> None:
    """Even data types torch's own weights_only loader accepts: our checkpoints never hold them."""
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "extra": value}, path)
    with pytest.raises(CheckpointError, match="pickled objects") as error:
        load_dict(path)
    assert str(path) in str(error.value)
    assert torch.Tensor in CHECKPOINT_TYPES and torch.Size not in CHECKPOINT_TYPES


def test_a_pickle_that_names_code_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    """torch's static scan names the callable; nothing of the file is unpickled, not even
    the tensors and plain values beside it (a trace of unpickling would be the marker)."""
    marker = tmp_path / "code-ran"
    path = pickle_bearing_checkpoint(tmp_path / "bad.ckpt", marker, "abc")
    with pytest.raises(CheckpointError, match=r"pickled objects .*posix\.mkdir") as error:
        load_dict(path)
    assert str(path) in str(error.value) and not marker.exists()


# -- predict and export never build what a file names -----------------------------------
def legacy_net(net: dict[str, Any]) -> dict[str, Any]:
    """A network description as checkpoints written before the registry held it."""
    arguments = {k: v for k, v in net.items() if k not in ("name", "_target_")}
    return {"_target_": "ser.models.MSSENet", **arguments}


def forged_checkpoint(trained: Path, tmp_path: Path, net: dict[str, Any]) -> Path:
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["ser_metadata"]["net"] = net
    forged = tmp_path / "forged.ckpt"
    torch.save(checkpoint, forged)
    return forged


FORGERIES = {
    # Hydra's recursive instantiate would call os.makedirs before building the network.
    "nested _target_": lambda net, marker: legacy_net(net) | {
        "kernel_sizes": {"_target_": "os.makedirs", "name": str(marker)}
    },
    # Passes a `ser.models.` prefix test, and compiles a library into the marker folder.
    "ser.models helper": lambda net, marker: {
        "_target_": "ser.models.native.build", "directory": str(marker)
    },
    "another callable": lambda net, marker: {"_target_": "os.makedirs", "name": str(marker)},
    "unknown argument": lambda net, marker: {"name": "mssenet", "num_classes": 7, "hook": str(marker)},
}


@pytest.mark.parametrize("tool", ["predict", "export"])
@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_predict_and_export_refuse_a_forged_network_without_building_anything(
    tool: str, forgery: str, command_runs: dict, request: pytest.FixtureRequest
) -> None:
    marker, forged, out, result = command_runs[request.node.callspec.id].result()
    assert not marker.exists(), "something named in the checkpoint was called"
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(forged) in lines[0] and "refusing to instantiate" in lines[0]
    assert not out.exists()


def test_checkpoints_written_before_the_registry_still_load(trained_checkpoint: Path, tmp_path: Path) -> None:
    current = load_checkpoint(trained_checkpoint)
    net = read_checkpoint(trained_checkpoint)["ser_metadata"]["net"]
    old = load_checkpoint(forged_checkpoint(trained_checkpoint, tmp_path, legacy_net(net)))
    x = torch.randn(2, *current.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(old.net(x), current.net(x), rtol=0, atol=0)


def test_weights_of_another_shape_are_refused_before_the_network_is_allocated(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    net = read_checkpoint(trained_checkpoint)["ser_metadata"]["net"]
    forged = forged_checkpoint(trained_checkpoint, tmp_path, net | {"filters": 4096, "num_blocks": 32})
    with pytest.raises(CheckpointError, match="do not fit the network") as error:
        load_checkpoint(forged)
    assert str(forged) in str(error.value)


# -- the registry --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "description, message",
    [
        ({"name": "resnet", "num_classes": 4}, "expected one of mssenet, timnet"),
        ({"_target_": "ser.models.networks.MSSENet", "num_classes": 4}, "class paths are never instantiated"),
        ({"name": "mssenet", "num_classes": 4, "_target_": "ser.models.MSSENet"}, "expected one"),
        ({"name": "timnet", "num_classes": 4, "kernel_sizes": [[3, 3]]}, "not an argument of timnet"),
        ({"name": "mssenet", "num_classes": "4"}, "num_classes='4': expected an integer"),
        ({"name": "mssenet", "num_classes": True}, "expected an integer"),
        ({"name": "mssenet", "num_classes": 4, "num_blocks": 10**9}, "from 1 to 32"),
        ({"name": "mssenet", "num_classes": 4, "branch_rate": 2.0}, "from 0 to 1"),
        ({"name": "mssenet", "num_classes": 4, "block_dropout": float("nan")}, "from 0 to 1"),
        ({"name": "mssenet", "num_classes": 4, "squeeze_excitation": "yes"}, "true or false"),
        ({"name": "mssenet", "num_classes": 4, "kernel_sizes": [[3, 3, 3]]}, "[height, width] pairs"),
        ({"name": "mssenet", "num_classes": 4, "filters": {"_target_": "builtins.int"}}, "nested _target_"),
        ({"name": "mssenet"}, "needs num_classes"),
    ],
)
def test_the_registry_refuses_what_it_does_not_know(description: dict, message: str) -> None:
    with pytest.raises(registry.NetworkSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        registry.network_spec(description)


def test_the_registry_builds_the_configured_networks() -> None:
    for model in ("mssenet", "timnet"):
        cfg = compose_config([f"model={model}"])
        config = OmegaConf.to_container(cfg.model.net, resolve=True) | {
            "num_classes": 4, "input_dim": 39, "implementation": resolve_for_run(typed_config([f"model={model}"])),  # auto, resolved
        }
        description = registry.checkpoint_description(config)
        assert description["name"] == model and "_target_" not in description
        name, arguments = registry.network_spec(description)
        net = registry.build_network(name, arguments)
        assert type(net) is registry.NETWORKS[model].cls
        assert sum(p.numel() for p in net.parameters()) > 0
