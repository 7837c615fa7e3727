"""Data-parallel (DDP) training of one fold: which launches work, and who writes.

`trainer=ddp trainer.devices=N` trains each fold on N devices (GPUs with NCCL; CPU
processes with gloo where there is no GPU). Lightning's `ddp` strategy starts the other
N-1 processes by running the same command line again (`python train.py ...`), so every
process runs the whole engine; files and W&B runs come from rank zero only. Test and
validation metrics count each utterance once (ser.training.metrics.UtterancePredictions), and
every reduction over the ranks is explicit (ser.training.module.EmotionClassifier). docs/scaling.md
says when DDP pays off and when one fold per GPU is the better use of the devices.
"""

from __future__ import annotations

import warnings

from omegaconf import DictConfig
from pytorch_lightning.utilities.rank_zero import rank_zero_only

# Strategies that run fit and test in worker processes started by Lightning itself: the
# test predictions would stay in the workers, never reaching the driver's results.
WORKER_PROCESS_STRATEGIES = ("spawn", "fork", "notebook")

# The test fold and the validation split are evaluated exactly once per utterance
# (repeats are dropped by row), so Lightning's advice to test on one device does not apply.
warnings.filterwarnings(
    "ignore", message=r"Using `DistributedSampler` with the dataloaders\. During `trainer\.(test|validate)\(\)`"
)


class LaunchError(ValueError):
    """A trainer setting that cannot run under this launch (a ValueError: one clear line)."""


def is_global_zero() -> bool:
    """Whether this process is rank zero, the one that writes files and W&B runs.

    Lightning sets the rank when a Trainer is built; before that it reads it from the
    launcher's environment (RANK, LOCAL_RANK, SLURM_PROCID), so a process started by
    the DDP launcher knows from its first line that it is not rank zero.
    """
    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


def uses_several_processes(trainer_cfg: DictConfig) -> bool:
    """Whether the trainer may run more than one process (devices or nodes beyond one)."""
    devices = trainer_cfg.get("devices", 1)
    return str(devices) not in ("1", "[0]") or int(trainer_cfg.get("num_nodes", 1) or 1) > 1


def check_launch(cfg: DictConfig) -> None:
    """Refuse multi-process trainer settings this driver cannot run correctly.

    - ddp_spawn / ddp_fork / ddp_notebook: the driver would never see the test
      predictions made in the worker processes; use `trainer=ddp`.
    - Lightning's `ddp` launcher inside a Hydra multirun (`-m`): it relaunches the command
      line, i.e. the whole sweep, in every extra process. DDP jobs of a sweep need
      processes started by the cluster (SLURM tasks through submitit, torchrun).
    """
    trainer_cfg = cfg.get("trainer")
    if trainer_cfg is None or not uses_several_processes(trainer_cfg):
        return
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if any(kind in strategy for kind in WORKER_PROCESS_STRATEGIES):
        raise LaunchError(
            f"trainer.strategy={strategy} runs fit and test in worker processes whose test "
            f"predictions never reach the driver; use trainer=ddp (strategy ddp) and start "
            f"it as `python train.py ...`"
        )
    from hydra.core.hydra_config import HydraConfig
    from pytorch_lightning.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if not HydraConfig.initialized() or HydraConfig.get().mode.name != "MULTIRUN":
        return
    if SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return
    raise LaunchError(
        "trainer=ddp with several devices cannot run inside a local multirun (-m): "
        "Lightning's DDP launcher would start the whole sweep again in each process. "
        "Run DDP as a single run, or use one device per job (fold-parallel, "
        "docs/scaling.md), or SLURM tasks (hydra/launcher=slurm with "
        "hydra.launcher.tasks_per_node=N)"
    )
