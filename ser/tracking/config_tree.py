"""The resolved config of a run: printed as a tree when the run starts, and saved beside
its results as `config.yaml`.

`.hydra/config.yaml` (ser.tracking.output_dir) is Hydra's record of the job: the config
before interpolations are resolved (`${paths.output_dir}` ...), and written only under
Hydra. `config.yaml` holds the values this run used, resolved, whoever called `train()`;
results.json keeps the same values as JSON for programs. Both functions take the resolved
config as plain values (the engine's `OmegaConf.to_container(cfg, resolve=True)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ser.tracking.atomic import atomic_write

CONFIG_FILE = "config.yaml"
# The groups shown first, in the order a run uses them; other keys follow as they come.
FIRST = ("dataset", "features", "model", "trainer", "cv", "task", "callbacks", "logger", "paths")


def plain_yaml(node: object) -> str:
    """YAML of a plain value as OmegaConf writes it (nothing in it is resolved: it is resolved already)."""
    if isinstance(node, Mapping):
        return OmegaConf.to_yaml(node)
    return f"{OmegaConf.to_yaml({'_': node})[3:]}"


def print_config_tree(config: Mapping[str, Any]) -> None:
    """A rich tree of the resolved config, one branch per top-level key."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold", guide_style="dim")
    keys = [key for key in FIRST if key in config] + [key for key in config if key not in FIRST]
    for key in keys:
        node = config[key]
        if isinstance(node, Mapping):
            tree.add(str(key)).add(Syntax(plain_yaml(node).rstrip(), "yaml", theme="ansi_dark"))
        else:
            tree.add(f"{key}: {plain_yaml(node).strip()}")
    Console().print(tree)


def save_config(config: Mapping[str, Any], output_dir: Path) -> Path:
    """Write the resolved config to `OUTPUT_DIR/config.yaml`, atomically."""
    path = Path(output_dir) / CONFIG_FILE
    text = OmegaConf.to_yaml(config).encode()
    atomic_write(path, lambda stream: stream.write(text))
    return path
