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

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from ser.errors import ConfigError
from ser.settings import usable_cores
from ser.settings.groups import TrainerSettings

# Strategies that run fit and test in worker processes started by Lightning itself: the
# test predictions would stay in the workers, never reaching the driver's results.
WORKER_PROCESS_STRATEGIES = ("spawn", "fork", "notebook")

# The test fold and the validation split are evaluated exactly once per utterance
# (repeats are dropped by row), so Lightning's advice to test on one device does not apply.
warnings.filterwarnings(
    "ignore", message=r"Using `DistributedSampler` with the dataloaders\. During `trainer\.(test|validate)\(\)`"
)


class LaunchError(ConfigError):
    """A trainer setting that cannot run under this launch (a ValueError: one clear line)."""


def is_global_zero() -> bool:
    """Whether this process is rank zero, the one that writes files and W&B runs.

    Lightning sets the rank when a Trainer is built; before that it reads it from the
    launcher's environment (RANK, LOCAL_RANK, SLURM_PROCID), so a process started by
    the DDP launcher knows from its first line that it is not rank zero.
    """
    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


def uses_several_processes(trainer: TrainerSettings) -> bool:
    """Whether the trainer may run more than one process (devices or nodes beyond one)."""
    return str(trainer.devices) not in ("1", "[0]") or int(trainer.get("num_nodes") or 1) > 1


def check_devices(trainer: TrainerSettings) -> None:
    """Refuse an accelerator this machine lacks, or more devices than it has, before Lightning
    fails on it with a traceback or, for CPU processes, starts them all and hangs."""
    accelerator = trainer.accelerator.lower()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and not gpus:
        raise LaunchError(
            f"trainer.accelerator={accelerator}, but this machine has no CUDA GPU that torch can use; "
            f"use trainer.accelerator=cpu (or auto)"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise LaunchError("trainer.accelerator=mps, but this machine has no Apple GPU; use trainer.accelerator=cpu (or auto)")
    if accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise LaunchError(f"trainer.accelerator={accelerator}: expected auto, cpu, gpu, cuda or mps")
    devices = trainer.devices
    on_gpu = accelerator not in ("cpu", "mps") and gpus > 0
    available, what = (gpus, "GPUs") if on_gpu else (usable_cores(), "CPU cores (one process per device)")
    if isinstance(devices, int) and not isinstance(devices, bool):
        wanted = devices
    elif isinstance(devices, list | tuple):
        wanted = len(devices) if on_gpu else max(len(devices), 1)
        if on_gpu and any(not isinstance(i, int) or not 0 <= i < gpus for i in devices):
            raise LaunchError(f"trainer.devices={list(devices)}: expected GPU indices in 0..{gpus - 1}")
    else:
        return  # "auto", -1 or a string Lightning parses: every device, never more
    if wanted == 0 or wanted < -1:
        raise LaunchError(f"trainer.devices={devices}: expected a number of devices >= 1, -1 or auto")
    if wanted > available:
        raise LaunchError(
            f"trainer.devices={devices}: this machine has {available} {what}; expected at most {available}"
        )


def check_launch(trainer: TrainerSettings) -> None:
    """Refuse trainer settings this machine or this driver cannot run correctly.

    - an accelerator the machine lacks, or more devices than it has (`check_devices`);
    - ddp_spawn / ddp_fork / ddp_notebook: the driver would never see the test
      predictions made in the worker processes; use `trainer=ddp`.
    - Lightning's `ddp` launcher inside a Hydra multirun (`-m`): it relaunches the command
      line, i.e. the whole sweep, in every extra process. DDP jobs of a sweep need
      processes started by the cluster (SLURM tasks through submitit, torchrun).
    """
    check_devices(trainer)
    if not uses_several_processes(trainer):
        return
    strategy = trainer.strategy
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
