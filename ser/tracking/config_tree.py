"""The resolved config of a run: printed as a tree when the run starts, and saved beside
its results as `config.yaml`.

`.hydra/config.yaml` (ser.tracking.output_dir) is Hydra's record of the job: the config
before interpolations are resolved (`${paths.output_dir}` ...), and written only under
Hydra. `config.yaml` holds the values this run used, resolved, whoever called `train()`;
results.json keeps the same values as JSON for programs.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ser.tracking.atomic import atomic_write

CONFIG_FILE = "config.yaml"
# The groups shown first, in the order a run uses them; other keys follow as they come.
FIRST = ("dataset", "features", "model", "trainer", "cv", "task", "callbacks", "logger", "paths")


def resolved_yaml(node: object) -> str:
    if isinstance(node, DictConfig):
        return OmegaConf.to_yaml(node, resolve=True)
    return f"{OmegaConf.to_yaml(OmegaConf.create({'_': node}), resolve=True)[3:]}"


def print_config_tree(cfg: DictConfig) -> None:
    """A rich tree of the resolved config, one branch per top-level key."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold", guide_style="dim")
    keys = [key for key in FIRST if key in cfg] + [key for key in cfg if key not in FIRST]
    for key in keys:
        node = cfg[key]
        if isinstance(node, DictConfig):
            tree.add(str(key)).add(Syntax(resolved_yaml(node).rstrip(), "yaml", theme="ansi_dark"))
        else:
            tree.add(f"{key}: {resolved_yaml(node).strip()}")
    Console().print(tree)


def save_config(cfg: DictConfig, output_dir: Path) -> Path:
    """Write the resolved config to `OUTPUT_DIR/config.yaml`, atomically."""
    path = Path(output_dir) / CONFIG_FILE
    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    atomic_write(path, lambda stream: stream.write(text))
    return path
