"""The config hash covers everything that changes results: every config group option and
every key changes it, except an allow-list of keys proven (here, by training) not to.

Groups and keys are discovered from the composed configs, so a setting added later (a new
`cv.*` key, a new group) is covered without touching this file: it must change the hash
unless it is added to NOT_RESULTS with its reason.
"""

from __future__ import annotations

import functools
import json
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError

from ser.conf import compose
from ser.training.config import config_hash
from tests.helpers.config import CONF, compose_config, one_torch_thread

# Keys (or whole subtrees) that may change without changing the hash, and why. A key here
# whose change alters a result would merge two experiments: keep it short.
NOT_RESULTS = {
    "paths": "where files go",
    "logger": "where metrics are sent",
    "hydra": "the launcher's own settings",
    "progress": "progress bars",
    "plots": "figures drawn after every fold is finished",
    "objective": "which mean train() returns to a sweeper",
    "trainer.default_root_dir": "Lightning's folder for its files (the run's output directory)",
    "trainer.enable_progress_bar": "the progress bar",
    "dataset.cache_dir": "where cached features are kept",
    "dataset.num_workers": "loader processes serving in-memory tensors in the sampler's order",
    "test_dataset.cache_dir": "as dataset.cache_dir",
    "test_dataset.num_workers": "as dataset.num_workers",
    "cv.only_folds": "which folds this job runs: fold-parallel jobs are one experiment",
    "cv.workers": "how many processes train the stacked folds: each fold computes what it computes in one",
}
# What an option needs composed with it (an experiment names a corpus; cross-corpus a target).
NEEDS = {"experiment": ["dataset=emodb"], "task": ["+dataset@test_dataset=synthetic"]}
BASE = ["paths.output_dir=/tmp/ser-hash"]


@functools.cache
def composed(*overrides: str) -> DictConfig:
    """The config of `overrides` (composed once for both tests: composition takes the time)."""
    return compose_config([*BASE, *overrides])


def excluded(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in NOT_RESULTS)


def groups() -> dict[str, list[str]]:
    """Every config group of ser/conf (Hydra's own excepted) and its options."""
    found = {}
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        group = folder.relative_to(CONF).as_posix()
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if options and not group.startswith("hydra"):
            found[group] = options
    return found


def choices() -> dict[str, Any]:
    """The option train.py chooses for each group (None: an optional group left out)."""
    return dict(compose(BASE, return_hydra_config=True).hydra.runtime.choices)


def choose(group: str, option: str | None, chosen: dict[str, Any]) -> list[str]:
    """Overrides choosing `option` of `group` (None: the group left out), as train.py takes them."""
    if option is None:
        return []
    return [f"{group}={option}" if group in chosen else f"+{group}={option}"]


def leaves(node: Any, prefix: str = "") -> list[str]:
    """Every key of `node` holding a value (not an interpolation), dotted."""
    found = []
    for key in node:
        path = f"{prefix}{key}"
        if OmegaConf.is_interpolation(node, key):
            continue  # its source key is changed instead
        value = node._get_node(key)
        if isinstance(value, DictConfig) and len(value) > 0:
            found += leaves(value, path + ".")
        else:
            found.append(path)
    return found


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    if isinstance(value, dict):
        return {**value, "changed": 1}
    return "changed"  # None, ???


def with_changed(cfg: DictConfig, key: str) -> DictConfig:
    copy = deepcopy(cfg)  # DictConfig.copy() would share the nested nodes
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(copy, parent) if parent else copy
    with open_dict(copy):
        value = None if OmegaConf.is_missing(node, leaf) else node[leaf]
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        # A key its group's schema types (ser.settings.data) takes a value of its type: a
        # null `cv.seed` becomes a number, not text.
        for candidate in (changed(value), 3, 0.5, True, ["changed"], {"changed": "changed"}):
            try:
                node[leaf] = candidate
                break
            except ValidationError:
                continue
    return copy


def without_non_results(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config less the keys of NOT_RESULTS (this test's own reading of it)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_RESULTS:
        parent, _, leaf = key.rpartition(".")
        node = container
        for part in parent.split(".") if parent else []:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return container


def test_every_group_option_that_changes_results_changes_the_hash() -> None:
    chosen = choices()
    hashes_of: dict[str, dict[Any, str]] = {}
    for group, options in groups().items():
        if group == "trainer/epochs":
            continue  # chosen by the dataset (optional trainer/epochs: ${dataset}), covered by it
        candidates: list[str | None] = list(options)
        if group not in chosen or chosen[group] is None:
            candidates.append(None)  # an optional group: leaving it out is an option too
        configs = {
            option: composed(*NEEDS.get(group, []), *choose(group, option, chosen))
            for option in candidates
        }
        hashes = {option: config_hash(cfg) for option, cfg in configs.items()}
        defining = {option: without_non_results(cfg) for option, cfg in configs.items()}
        for a in candidates:
            for b in candidates:
                same = defining[a] == defining[b]
                assert (hashes[a] == hashes[b]) == same, (
                    f"{group}={a} and {group}={b}: {'equal' if same else 'different'} settings, "
                    f"hashes {hashes[a]} and {hashes[b]}"
                )
        hashes_of[group] = hashes
    # The groups of the issue: callbacks changes results; loggers and paths do not.
    assert len(set(hashes_of["callbacks"].values())) == len(groups()["callbacks"]) == 3
    assert len(set(hashes_of["logger"].values())) == len(set(hashes_of["paths"].values())) == 1
    assert len(set(hashes_of["dataset"].values())) == len(groups()["dataset"])
    assert {"cv", "features", "model", "model/se", "task", "trainer", "sweep"} <= set(hashes_of)


def configs_to_walk() -> list[list[str]]:
    """The default config and one per group option: every key some option brings."""
    chosen = choices()
    configs = [[]]
    for group, options in groups().items():
        if group != "trainer/epochs":
            configs += [[*NEEDS.get(group, []), *choose(group, option, chosen)] for option in options]
    return configs


def test_every_key_changes_the_hash_unless_it_is_proven_not_to_change_results() -> None:
    seen: set[str] = set()
    silent, loud = [], []
    for overrides in configs_to_walk():
        cfg = composed(*overrides)
        before = config_hash(cfg)
        for key in leaves(cfg):
            if key in seen:
                continue
            seen.add(key)
            moved = config_hash(with_changed(cfg, key)) != before
            if excluded(key) and moved:
                loud.append(key)
            elif not excluded(key) and not moved:
                silent.append(key)
    assert not silent, f"keys that change no hash but are not in NOT_RESULTS: {silent}"
    assert not loud, f"keys of NOT_RESULTS that change the hash: {loud}"
    # The walk reached the keys of non-default options (early stopping, speaker folds).
    assert {"callbacks.early_stopping.patience", "cv.group_by", "trainer.max_epochs"} <= seen


@pytest.mark.slow
def test_the_excluded_keys_change_no_result(tiny_config, tmp_path: Path) -> None:
    """Trained with every kind of excluded setting changed, the figures are the same."""
    from ser.training.engine import train

    plain = tiny_config("trainer.deterministic=true", output_dir=tmp_path / "a")
    varied = tiny_config(
        "trainer.deterministic=true", "logger=csv", "progress=true", "plots.embeddings=true",
        "dataset.num_workers=1", "objective=test/war", output_dir=tmp_path / "b",
    )
    with open_dict(varied):
        varied.paths.cache_dir = str(tmp_path / "other-cache")
    assert config_hash(plain) == config_hash(varied)
    with one_torch_thread():
        train(plain)
        train(varied)
    folds = [json.loads((tmp_path / run / "results.json").read_text())["folds"] for run in ("a", "b")]
    figures = [
        [{k: f[k] for k in ("test/uar", "test/war", "confusion_matrix", "test_rows")} for f in run]
        for run in folds
    ]
    assert figures[0] == figures[1]
    # The loss to floating-point order: the BLAS may add in another order for buffers at
    # other addresses (seen: 6e-7 relative between two runs in one process).
    assert [f["test/loss"] for f in folds[0]] == pytest.approx([f["test/loss"] for f in folds[1]], rel=1e-5)
