"""The TIM-Net feature files: loaded without running code, checked, and trained on."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict
from omegaconf.errors import MissingMandatoryValue

from ser.data.timnet_npy import (
    FeatureFileError,
    TimNetFeatureDataModule,
    UnsafePickleError,
    load_feature_file,
)
from tests.helpers import forged_files as forged
from tests.helpers.cli_runs import selected_cases, started_together
from tests.helpers.config import ROOT, compose_config, one_torch_thread
from tests.helpers.feature_files import (
    RunsExec,
    RunsShell,
    overflow_in_float32,
    save_shared,
    shared_arrays,
)

EMODB_CLASSES = ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"]


def module(path: Path, corpus: str = "emodb", **kwargs) -> TimNetFeatureDataModule:
    # Signal length 3584 gives TIM-Net's frame count 8 (1 + 3584 // 512).
    settings = dict(path=str(path), corpus=corpus, features={}, signal_length=3584, check_counts=False)
    settings.update(kwargs)
    return TimNetFeatureDataModule(**settings)


# ----------------------------------------------------------------------------- loading


def test_shared_format_loads_in_file_order(tmp_path: Path) -> None:
    arrays = shared_arrays()
    data = module(save_shared(tmp_path / "EMODB.npy", arrays))
    data.prepare_data()
    assert data.features.shape == (28, 8, 39) and data.input_dim == 39
    np.testing.assert_array_equal(data.features.numpy(), arrays["x"])
    assert data.targets.tolist() == np.argmax(arrays["y"], axis=1).tolist()
    assert data.class_names == EMODB_CLASSES and data.num_classes == 7
    assert set(data.manifest.speakers) == {"unknown"}
    assert data.manifest.utterances[5].path == f"{tmp_path / 'EMODB.npy'}#5"
    assert data.skipped_files == [] and data.feature_shape == (8, 39)
    assert data.corpus.split_seed == 46


@pytest.mark.parametrize("protocol", [3, 4, 5])  # np.save writes 3
def test_raw_pickles_of_any_protocol_load(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "features.pkl"
    path.write_bytes(pickle.dumps(shared_arrays(), protocol=protocol))
    assert load_feature_file(path)["x"].shape == (28, 8, 39)


def test_npz_loads(tmp_path: Path) -> None:
    np.savez(tmp_path / "features.npz", **shared_arrays())
    assert load_feature_file(tmp_path / "features.npz")["y"].shape == (28, 7)


@pytest.mark.parametrize("payload", [RunsShell, RunsExec], ids=["os.system", "builtins.exec"])
@pytest.mark.parametrize("container", ["npy", "raw pickle"])
def test_a_pickle_that_would_run_code_is_refused_without_running(
    tmp_path: Path, payload: type, container: str
) -> None:
    marker = tmp_path / "code-ran"
    arrays = shared_arrays()
    arrays["x"] = payload(marker)
    path = tmp_path / "EMODB.npy"
    if container == "npy":
        np.save(path, arrays, allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps(arrays))
    with pytest.raises(UnsafePickleError) as caught:
        module(path).prepare_data()
    message = str(caught.value)
    assert str(path) in message and "refused" in message
    assert ("system" in message) or ("exec" in message)
    assert not marker.exists()


def test_the_payload_really_would_have_run(tmp_path: Path) -> None:
    # Guard for the test above: a naive pickle.loads of the same bytes creates the marker.
    marker = tmp_path / "code-ran"
    pickle.loads(pickle.dumps(RunsExec(marker)))
    assert marker.exists()


def test_a_plain_array_file_is_refused_clearly(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 39), np.float32))
    with pytest.raises(FeatureFileError, match=r"x\.npy: holds a single array of shape \(3, 8, 39\)"):
        load_feature_file(tmp_path / "x.npy")


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.npy").write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(FeatureFileError, match=re.escape(str(tmp_path / "junk.npy"))):
        load_feature_file(tmp_path / "junk.npy")
    with pytest.raises(FileNotFoundError, match="dataset.path"):
        load_feature_file(tmp_path / "absent.npy")


# ----------------------------------------------------------------------------- checks


def test_wrong_class_count_names_the_corpus(tmp_path: Path) -> None:
    path = save_shared(tmp_path / "RAVDE.npy", shared_arrays(classes=8))
    with pytest.raises(FeatureFileError, match=r"RAVDE\.npy: 'y' has shape \(32, 8\); expected \(N, 7\)"):
        module(path, corpus="emodb").prepare_data()
    data = module(path, corpus="ravdess", signal_length=None)
    with pytest.warns(UserWarning, match="8 frames per utterance, but TIM-Net's recipe for ravdess gives 215"):
        data.prepare_data()
    assert data.num_classes == 8


def test_smoothed_labels_warn_and_use_argmax(tmp_path: Path) -> None:
    arrays = shared_arrays()
    arrays["y"] = arrays["y"] * 0.9 + 0.1 / 7
    data = module(save_shared(tmp_path / "smoothed.npy", arrays))
    with pytest.warns(UserWarning, match="not one-hot"):
        data.prepare_data()
    assert data.targets.tolist() == np.repeat(np.arange(7), 4).tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(y=a["y"][:-1]), "'x' has 28 rows but 'y' has 27"),
        (lambda a: a.update(x=a["x"][:, :, 0]), r"'x' has shape \(28, 8\); expected"),
        (lambda a: a["y"].__setitem__(3, 0.0), r"rows \[3\] of 'y' have no single largest entry"),
        (lambda a: a.pop("y"), r"missing key\(s\) \['y'\]"),
        (lambda a: a["x"].__setitem__((0, 0, 0), np.nan), "NaN or infinite"),
        # What a trusted file never holds: values float32 cannot carry, empty dimensions.
        (overflow_in_float32, r"'x' holds 1 NaN or infinite value\(s\) as float32"),
        (lambda a: a["y"].__setitem__((2, 0), np.nan), "'y' holds NaN or infinite values"),
        (lambda a: a.update(x=a["x"][:, :0]), r"'x' has shape \(28, 0, 39\); expected at least one utterance, frame"),
        (lambda a: a.update(x=a["x"][:0], y=np.zeros(0, np.int64)), r"'x' has shape \(0, 8, 39\)"),
        (lambda a: a.update(y=np.zeros((), np.int64)), r"'y' has shape \(\); expected \(N, 7\) one-hot rows"),
        (lambda a: a.update(y=np.zeros((28, 0))), r"'y' has shape \(28, 0\)"),
        (lambda a: a.update(x=a["x"].astype(np.complex64)), "refused to load: an array of dtype 'c8'"),
        (lambda a: a.update(y=np.full(28, 7)), r"'y' is 1-D; expected integer class indices in 0..6"),
    ],
    ids=["rows", "x-dims", "tie", "missing-y", "nan", "float32-overflow", "nan-y", "no-frames", "no-rows",
         "0-d-y", "no-classes", "complex", "index-range"],
)
def test_malformed_contents_are_named(tmp_path: Path, change, message: str) -> None:
    arrays = shared_arrays()
    change(arrays)
    path = save_shared(tmp_path / "bad.npy", arrays)
    with pytest.raises(FeatureFileError, match=re.escape(str(path)) + ".*" + message):
        module(path).prepare_data()


def test_partial_file_warns_with_counts(tmp_path: Path) -> None:
    data = module(save_shared(tmp_path / "EMODB.npy", shared_arrays()), check_counts=True)
    with pytest.warns(UserWarning, match="angry: found 4, expected 127"):
        data.prepare_data()


def test_config_requires_path_and_corpus() -> None:
    cfg = compose_config(["dataset=timnet_npy"])
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.dataset.path


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_training_on_a_shared_feature_file(tmp_path: Path) -> None:
    from ser.training.engine import train

    path = save_shared(tmp_path / "EMODB.npy", shared_arrays())
    cfg = compose_config([
        "dataset=timnet_npy", f"dataset.path={path}", "dataset.corpus=emodb",
        "dataset.signal_length=3584", "dataset.check_counts=false",
        "cv.folds=2", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "model.net.num_blocks=1", "logger=none", "callbacks=none", "progress=false",
    ])
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.output_dir = str(tmp_path / "run")
    with one_torch_thread():
        uar = train(cfg)
    assert 0.0 <= uar <= 1.0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["corpus"] == "emodb" and results["class_names"] == EMODB_CLASSES
    assert results["num_utterances"] == 28 and results["seeds"]["split"] == 46
    matrices = np.array([fold["confusion_matrix"] for fold in results["folds"]])
    assert matrices.sum() == 28 and matrices.sum(axis=(0, 2)).tolist() == [4] * 7
    assert results["skipped_files"] == []


# ----------------------------------------------------------------------------- forged files
# Files built opcode by opcode (tests/helpers/forged_files.py): they name only numpy's own
# builders, so the restricted unpickler's name check alone let them through.

def load_in_subprocess(path: Path) -> subprocess.CompletedProcess[str]:
    """Load `path` as the DataModule does, in a process of its own: a segfault there is
    a failing exit code (139), not a dead test session."""
    return forged.run_isolated(
        "from ser.data.timnet_npy import check_feature_arrays, load_feature_file",
        "lambda path: check_feature_arrays(load_feature_file(path), 7, path)", str(path),
    )


FORGERIES = [
    pytest.param(forged.forged_object_array, r"an object array \(dtype 'O8'\)", id="object-array"),
    pytest.param(forged.object_x_in_dict, r"an object array \(dtype 'O8'\)", id="object-x"),
    pytest.param(forged.object_field, r"an array of dtype 'V8', not a plain number type", id="object-field"),
    pytest.param(forged.object_scalar, r"an object array \(dtype 'O8'\)", id="object-scalar"),
]


def loaded(forgery, folder: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The forged file `forgery` gives, written into `folder`, and its load in a process of its own."""
    path = forged.write(folder / "EMODB.npy", forged.npy_container(forgery()))
    return path, load_in_subprocess(path)


def trained_on(folder: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`python train.py` with its defaults (progress bar on, W&B offline) on a forged object array."""
    path = forged.write(folder / "EMODB.npy", forged.npy_container(forged.forged_object_array()))
    return path, subprocess.run(
        [sys.executable, "train.py", "dataset=timnet_npy", f"dataset.path={path}",
         "dataset.corpus=emodb", f"hydra.run.dir={folder / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )


@pytest.fixture(scope="module")
def forged_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The processes of the two tests below, started together (two at a time), each on a
    forged file in a folder of its own: {case id or "train.py": (path, finished process)}."""
    cases = selected_cases(request, test_forged_object_dtypes_are_refused_without_a_crash)
    commands = {
        case.id: partial(loaded, case.values[0], tmp_path_factory.mktemp(case.id))
        for case in FORGERIES if case.id in cases
    }
    if selected_cases(request, test_train_py_refuses_a_forged_object_array):
        commands["train.py"] = partial(trained_on, tmp_path_factory.mktemp("train"))
    with started_together(commands) as runs:
        yield runs


@pytest.mark.parametrize(("forgery", "message"), FORGERIES)
def test_forged_object_dtypes_are_refused_without_a_crash(
    forged_runs: dict, request: pytest.FixtureRequest, forgery, message: str
) -> None:
    path, done = forged_runs[request.node.callspec.id].result()
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert re.fullmatch(f"error: {re.escape(str(path))}: refused to load: {message}.*\n", done.stderr)


def test_train_py_refuses_a_forged_object_array(forged_runs: dict) -> None:
    # The user's path: python train.py with its defaults (progress bar on, W&B offline).
    path, done = forged_runs["train.py"].result()
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert f"error: {path}: refused to load: an object array" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (forged.allocation_bomb, "a numpy array whose data the file does not hold"),
        (forged.memo_bomb, "a pickle memo index 67108864 larger than the pickle itself"),
        (forged.huge_npy_header, r"its .npy header declares an array of shape \(1099511627776,\)"),
    ],
    ids=["reconstruct-shape", "memo-index", "npy-header"],
)
def test_no_allocation_beyond_what_the_file_holds(tmp_path: Path, data, message: str) -> None:
    path = forged.write(tmp_path / "EMODB.npy", data())
    assert path.stat().st_size < 400
    tracemalloc.start()  # numpy reports its array buffers to tracemalloc too
    try:
        with pytest.raises(FeatureFileError, match=re.escape(str(path)) + ".*" + message):
            load_feature_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated for a {path.stat().st_size}-byte file"


def test_an_npz_member_header_must_fit_its_member(tmp_path: Path) -> None:
    path = tmp_path / "features.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", forged.huge_npy_header())
        archive.writestr("y.npy", forged.npy_header("<f4", (1, 7)) + bytes(28))
    with pytest.raises(FeatureFileError, match=re.escape(str(path)) + r": its .npy header declares"):
        load_feature_file(path)


def test_legitimate_variants_still_load(tmp_path: Path) -> None:
    arrays = shared_arrays()
    big_endian = {"x": arrays["x"].astype(">f8"), "y": np.asfortranarray(arrays["y"].astype(">i2"))}
    loaded = load_feature_file(save_shared(tmp_path / "big.npy", big_endian))
    np.testing.assert_array_equal(loaded["x"], arrays["x"])
    np.testing.assert_array_equal(loaded["y"], arrays["y"])
    np.savez_compressed(tmp_path / "small.npz", **arrays)
    np.testing.assert_array_equal(load_feature_file(tmp_path / "small.npz")["x"], arrays["x"])
    indices = {"x": arrays["x"], "y": np.argmax(arrays["y"], axis=1)}  # 1-D class indices
    data = module(save_shared(tmp_path / "indices.npy", indices))
    data.prepare_data()
    assert data.targets.tolist() == indices["y"].tolist()
