"""The package works installed, not only from a checkout: the wheel carries the configs, the
kernels' C sources and every module; its console scripts name functions that exist; each
command answers --help; the base install needs none of the extras nor the test tools.

The full check (a fresh virtual environment, `pip install -c constraints.txt .`,
`ser-train debug=fast` from another folder) installs torch and takes minutes; it is done by
hand before a release. Here the same run goes in an environment that lacks those packages.
"""

from __future__ import annotations

import ast
import configparser
import email
import functools
import importlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.cli_runs import selected_probes, started_together
from tests.helpers.config import ROOT, cli_environment

# What a wheel is built from: the package, and benchmarks/ beside it, which must stay out.
SOURCES = ("pyproject.toml", "README.md", "ser", "hydra_plugins", "benchmarks")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The project's wheel, built from a copy of its sources (the build writes beside them)."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(folder), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = folder.glob("ser-*.whl")
    return zipfile.ZipFile(built)


def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_wheel_carries_configs_kernel_sources_and_every_module(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for pattern in ("ser/**/*.py", "ser/conf/**/*.yaml", "ser/models/native/*.c",
                        "hydra_plugins/**/*.py")
        for path in ROOT.glob(pattern)
        if "__pycache__" not in path.parts
    }
    assert "ser/conf/train.yaml" in expected and "ser/models/native/tab.c" in expected
    assert sorted(expected - names) == []
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/"))]


def test_the_package_never_imports_the_benchmarks() -> None:
    """benchmarks/ is not installed: an import of it from ser/ would fail for every user."""
    importers = []
    for path in (ROOT / "ser").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            if any(name.split(".")[0] == "benchmarks" for name in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert importers == []


def test_the_console_scripts_are_declared_and_resolve(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    declared = dict(parser["console_scripts"])
    assert declared == scripts()
    assert "ser-train" in declared
    for name, target in declared.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


# Runs each command's function with --help in one child process (as its console script
# would), recording the exit status and what it printed.
HELP = """
import contextlib, io, json, sys
import ser.commands as commands
out = {}
for name, function in json.loads(sys.argv[1]).items():
    sys.argv = [name, "--help"]
    text, code = io.StringIO(), 0
    with contextlib.redirect_stdout(text):
        try:
            getattr(commands, function)()
        except SystemExit as error:
            code = error.code or 0
    out[name] = [code, text.getvalue()]
print(json.dumps(out))
"""


def help_run(folder: Path) -> subprocess.CompletedProcess[str]:
    functions = {name: target.split(":")[1] for name, target in scripts().items()}
    return subprocess.run(
        [sys.executable, "-c", HELP, json.dumps(functions)], cwd=folder, capture_output=True,
        text=True, timeout=600, env=cli_environment(PYTHONPATH=str(ROOT)),  # this checkout's ser
    )


@pytest.fixture(scope="module")
def commands(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The processes of test_every_command_answers_help and of
    test_ser_train_runs_without_the_extras_and_test_tools, started together, each in a
    folder of its own: {test: (the folder, the finished process)}."""
    def with_folder(probe):  # noqa: ANN001, ANN202
        @functools.wraps(probe)
        def run(folder: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
            return folder, probe(folder)

        return run

    probes = (
        (test_every_command_answers_help, with_folder(help_run)),
        (test_ser_train_runs_without_the_extras_and_test_tools, with_folder(base_install_run)),
    )
    with started_together(selected_probes(request, tmp_path_factory, probes)) as runs:
        yield runs


@pytest.mark.slow
def test_every_command_answers_help(commands: dict) -> None:
    tmp_path, result = commands["test_every_command_answers_help"].result()
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.splitlines()[-1])
    for name, (code, text) in answers.items():
        assert code == 0, f"{name} --help exited {code}"
        assert "=" in text and len(text.splitlines()) > 3, f"{name} --help says too little"
    # the Hydra commands list the config groups; the small tools each of their keys
    assert "dataset: " in answers["ser-train"][1] and "dataset: " in answers["ser-data"][1]
    assert "checkpoint=..." in answers["ser-predict"][1]
    assert "dir=..." in answers["ser-gather"][1]
    assert not list(tmp_path.iterdir()), "--help wrote files"


# What `pip install .` must not bring: the extras' packages and the test tools.
NOT_IN_BASE = (
    "optuna", "sqlalchemy", "librosa", "pytest", "onnxruntime", "onnx", "ruff",
    "hydra-optuna-sweeper", "hydra-joblib-launcher", "hydra-submitit-launcher", "submitit",
)


def test_the_base_install_requires_no_extra_nor_test_tool(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(wheel.read(name))
    required = [Requirement(line) for line in metadata.get_all("Requires-Dist")]
    base = {canonicalize_name(r.name): r for r in required if r.marker is None}
    assert not set(base) & set(NOT_IN_BASE)
    assert {"torch", "torchaudio", "pytorch-lightning", "hydra-core", "filelock"} <= set(base)
    assert str(base["torch"].specifier) == "<2.12,>=2.11"  # the exact pin is constraints.txt's
    extras = {canonicalize_name(r.name) for r in required if r.marker is not None}
    assert {"hydra-joblib-launcher", "hydra-submitit-launcher"} <= extras
    assert set(metadata.get_all("Provides-Extra")) == {"cluster", "optuna", "onnx", "dev"}


def mirror(source: Path, target: Path, hidden: set[Path]) -> None:
    """`target`: links to everything in the folder `source` but the files `hidden`
    (relative to `source`); a folder that holds none of them is linked whole."""
    target.mkdir()
    for entry in source.iterdir():
        relative = entry.relative_to(source)
        inside = {path.relative_to(relative) for path in hidden if path.is_relative_to(relative)}
        if not inside:
            (target / entry.name).symlink_to(entry)
        elif entry.is_dir():
            left = [f for f in entry.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                    and f.relative_to(entry) not in inside]
            if left:
                mirror(entry, target / entry.name, inside)


def base_install_run(folder: Path) -> subprocess.CompletedProcess[str]:
    """`ser-train debug=fast` from another folder, in this environment less the packages of
    NOT_IN_BASE (their files and metadata), as a `pip install .` would leave it."""
    site_packages = Path(importlib.metadata.distribution("torch").locate_file(""))
    hidden = set()
    for name in NOT_IN_BASE:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        hidden |= {Path(f) for f in files if ".." not in Path(f).parts}
    assert hidden, "the dev install should have the packages this test hides"
    mirror(site_packages, folder / "site", hidden)
    child = (
        "import importlib.util, site, sys\n"
        f"site.addsitedir({str(folder / 'site')!r})\n"
        f"assert not [n for n in {NOT_IN_BASE!r} if importlib.util.find_spec(n.replace('-', '_'))]\n"
        "sys.argv = ['ser-train', *sys.argv[1:]]\n"
        "from ser.commands import train\n"
        "train()\n"
    )
    return subprocess.run(
        [sys.executable, "-S", "-c", child, "debug=fast", f"paths.data_dir={folder / 'data'}",
         f"hydra.run.dir={folder / 'run'}"],
        cwd=folder, capture_output=True, text=True, timeout=600,
        env=cli_environment(PYTHONPATH=str(ROOT)),  # this checkout's ser
    )


@pytest.mark.slow
def test_ser_train_runs_without_the_extras_and_test_tools(commands: dict) -> None:
    """`ser-train debug=fast` from another folder, in this environment less the packages of
    NOT_IN_BASE (their files and metadata), as a `pip install .` would leave it."""
    tmp_path, done = commands["test_ser_train_runs_without_the_extras_and_test_tools"].result()
    run_dir = tmp_path / "run"
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and len(results["folds"]) == 2
