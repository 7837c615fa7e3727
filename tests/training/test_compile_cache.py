"""`model.compile` compiles into a folder only the user can write (ser.training.compile_cache),
never into TorchInductor's default under /tmp, and a compiled run trains as the eager one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

from ser.models import native
from ser.settings import ConfigError
from ser.training.compile_cache import VARIABLE, use_private_compile_cache
from tests.helpers.cli_runs import concurrently, environment, run_train_py
from tests.helpers.config import TINY_DATA


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with their own cache folder and no TORCHINDUCTOR_CACHE_DIR of their own."""
    monkeypatch.delenv(VARIABLE, raising=False)  # and restored after the test
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_kernels_go_to_a_private_folder_in_the_users_cache(user_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = use_private_compile_cache()
    assert path == user_cache / "ser-inductor"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert cache_dir() == str(path)  # where TorchInductor itself now writes and reads
    # torch's own default under /tmp, which it puts in the variable when it first needs
    # the folder (importing Lightning does), is not taken for the user's choice
    monkeypatch.setenv(VARIABLE, default_cache_dir())
    assert use_private_compile_cache() == path and cache_dir() == str(path)


def test_a_folder_others_may_write_is_refused(user_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = user_cache.parent / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(VARIABLE, str(shared))
    with pytest.raises(ConfigError, match=rf"^{VARIABLE}={shared}: may be written by other users \(mode 777\), and torch.compile imports"):
        use_private_compile_cache()
    shared.chmod(0o700)  # the user's own folder: used as set
    assert use_private_compile_cache() == shared and os.environ[VARIABLE] == str(shared)


def test_a_folder_of_another_user_or_a_link_is_refused(user_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = user_cache / "ser-inductor"
    planted.mkdir(parents=True, mode=0o700)
    owner = planted.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # as if another user had made it
    with pytest.raises(ConfigError, match=rf"the compile cache {planted}: belongs to another user \(uid {owner}\)"):
        use_private_compile_cache()
    assert VARIABLE not in os.environ  # TorchInductor would fall back to /tmp: the run stops instead
    monkeypatch.undo()
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    planted.rmdir()
    planted.symlink_to(user_cache.parent)
    with pytest.raises(ConfigError, match=rf"the compile cache {planted}: is a link or a file, not a folder"):
        use_private_compile_cache()


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one(tmp_path: Path) -> None:
    """`python train.py model.compile=default` with the defaults (progress bar, W&B
    offline), against the eager reference: the same losses in both folds (the second fold
    compiles its own network's weights, not the first's), kernels in the user's cache; and
    the compiled run with its folds stacked."""
    user_cache = tmp_path / "cache"
    env = {k: v for k, v in environment(XDG_CACHE_HOME=str(user_cache)).items() if k != VARIABLE}
    env["SER_NATIVE_CACHE"] = str(native.cache_dir())  # the built fused kernels, not a rebuild
    common = [*TINY_DATA, "trainer.max_epochs=2", f"paths.data_dir={tmp_path / 'data'}"]
    # The three runs need nothing of one another: they run at once (the compiled ones
    # compile into the same cache, as a user's concurrent runs do).
    concurrently(
        lambda: run_train_py([*common, "model.compile=default", f"hydra.run.dir={tmp_path / 'compiled'}"], tmp_path, env=env),
        lambda: run_train_py([*common, "model.net.implementation=reference", f"hydra.run.dir={tmp_path / 'eager'}"], tmp_path),
        # Stacked folds (cv.stack=true) compiled: the folds as one grouped network (its
        # masks drawn eagerly, as the eager run draws them), compiled; the eager run's figures.
        lambda: run_train_py(
            [*common, "model.compile=default", "cv.stack=true", f"hydra.run.dir={tmp_path / 'stacked'}"], tmp_path,
            env=env,
        ),
    )
    compiled, eager = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("compiled", "eager"))
    assert compiled["config"]["model"]["compile"] == "default"
    assert compiled["implementation"] == eager["implementation"] == "reference"
    for ours, reference in zip(compiled["folds"], eager["folds"], strict=True):
        assert ours["test/loss"] == pytest.approx(reference["test/loss"], rel=1e-4)
        assert ours["confusion_matrix"] == reference["confusion_matrix"]
    for fold in (0, 1):
        losses = [
            [epoch["train/loss"] for epoch in json.loads((tmp_path / name / "history" / f"fold_{fold:02d}.json").read_text())["epochs"]]
            for name in ("compiled", "eager")
        ]
        assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert any((user_cache / "ser-inductor").rglob("*.py"))  # TorchInductor's generated code
    stacked = json.loads((tmp_path / "stacked" / "results.json").read_text())
    assert stacked["stacked"] is True
    for ours, reference in zip(stacked["folds"], eager["folds"], strict=True):
        assert ours["test/loss"] == pytest.approx(reference["test/loss"], rel=1e-4)
        assert ours["confusion_matrix"] == reference["confusion_matrix"]
