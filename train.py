"""Cross-validate a speech emotion recognition model: `python train.py dataset=... model=...`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ser.cli import run_cli
from ser.conf import CONFIG_PATH, ROOT_CONFIG


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=ROOT_CONFIG)
def main(cfg: DictConfig) -> float:
    from ser.training import train

    return run_cli(train, cfg)


if __name__ == "__main__":
    main()
