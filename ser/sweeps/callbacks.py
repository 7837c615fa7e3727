"""Hydra callbacks of every run (ser/conf/hydra/default.yaml), for multiruns and sweeps.

- `SharedOutputGuard`: when a multirun's jobs share one directory (`+parallel=folds`),
  Hydra writes `multirun.yaml` there before any job checks it (ser.tracking.output_dir),
  so this checks it first, in `on_multirun_start`, with the jobs' config hash.
- `SweepDirectory`: creates the sweep directory before the sweeper starts (Optuna's
  sqlite file lives there) and tells `sweep.py` where it is.
- `GpuSlots`: puts a machine's parallel job processes (joblib launcher) on its GPUs, one
  each, or several fold jobs sharing one.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from ser.errors import ConfigError
from ser.sweeps.launch import SWEEP_DIR_FILE_ENV
from ser.tracking.output_dir import OutputDirectoryError, check_unclaimed

log = logging.getLogger(__name__)


def shared_output(config: DictConfig) -> tuple[Path, str] | None:
    """(the output directory every job of this multirun writes into, their config hash).

    None when each job has its own (`paths.output_dir` follows the job's
    `hydra.runtime.output_dir`, unknown before the job runs) or the config cannot be
    resolved yet (the jobs then report what is wrong).
    """
    instance = HydraConfig.instance()
    previous = instance.cfg
    job = copy.deepcopy(config)
    try:
        instance.set_config(job)  # what ${hydra:...} reads, as in a job
        with read_write(job), open_dict(job):
            del job["hydra"]
        output_dir = job.paths.output_dir
        if output_dir is None:
            return None
        # The driver's hash (torch and Lightning come with it): only for a shared directory.
        from ser.training.config import config_hash

        return Path(str(output_dir)).resolve(), config_hash(job)
    except (OmegaConfBaseException, ValueError):
        return None
    finally:
        instance.cfg = previous


class SharedOutputGuard(Callback):
    """Stop a multirun (exit code 2) before it writes into a directory it must not use."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        shared = shared_output(config)
        if shared is None:
            return
        try:
            check_unclaimed(*shared)
        except OutputDirectoryError as error:
            # Hydra turns a callback's exception into a warning and goes on: exit instead.
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)


class SweepDirectory(Callback):
    """Create the sweep directory at the start of a multirun and report where it is.

    The Optuna sweeper opens ``sqlite:///<sweep dir>/optuna.db`` before any job has
    created the directory; and ``sweep.py run`` needs the resolved directory to report.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("sweep directory: %s", sweep_dir)
        marker = os.environ.get(SWEEP_DIR_FILE_ENV)
        if marker:
            Path(marker).write_text(str(sweep_dir))


@dataclass
class DeviceClaim:
    """A GPU held by this process: an exclusive lock on its slot's lock file, or shared."""

    device: str
    shared: bool
    lock: FileLock | None = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def default_lock_dir() -> Path:
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"ser-gpu-locks-{user}"


def claim_device(candidates: Sequence[str], lock_dir: Path, slots_per_device: int = 1) -> DeviceClaim:
    """Lock a free slot of one of the devices in ``candidates``; fill the devices evenly.

    Each device has ``slots_per_device`` slots: the first slot of every device is taken
    before any second one, so jobs spread over the devices. Each slot is a file lock
    (`filelock`) in ``lock_dir``: the operating system drops it when the holder exits, even
    on a crash, so nothing goes stale. When every slot is held (more parallel jobs than
    slots) the process shares a device chosen by its process id, rather than waiting.
    """
    if not candidates:
        raise ValueError("claim_device needs at least one candidate device")
    if slots_per_device < 1:
        raise ValueError(f"slots_per_device must be >= 1, got {slots_per_device}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(slots_per_device):
        for device in candidates:
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
            suffix = "" if slot == 0 else f"-slot{slot}"
            # Held for the life of the process (or until released).
            lock = FileLock(lock_dir / f"gpu-{name}{suffix}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            return DeviceClaim(device=device, shared=False, lock=lock)
    return DeviceClaim(device=candidates[os.getpid() % len(candidates)], shared=True)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else all (nvidia-smi).

    Asked without initialising CUDA, so CUDA_VISIBLE_DEVICES can still be narrowed.
    """
    setting = os.environ.get("CUDA_VISIBLE_DEVICES")
    if setting is not None:
        return [device.strip() for device in setting.split(",") if device.strip()]
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=60, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def wants_one_gpu(config: DictConfig) -> bool:
    """Whether the job trains on exactly one device that may be a GPU.

    Not for ``trainer.accelerator=cpu``, nor for data-parallel jobs (``trainer=ddp``,
    ``trainer.devices`` other than 1, several nodes), which need all their GPUs.
    """
    accelerator = str(OmegaConf.select(config, "trainer.accelerator", default="auto"))
    devices = str(OmegaConf.select(config, "trainer.devices", default=1))
    nodes = OmegaConf.select(config, "trainer.num_nodes", default=1) or 1
    return accelerator != "cpu" and devices == "1" and int(nodes) == 1


def parallel_jobs(config: DictConfig) -> int:
    """Jobs the launcher runs at once on this machine (joblib's ``n_jobs``; 1 otherwise)."""
    n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    cores = os.cpu_count() or 1
    return max(1, cores + 1 + n_jobs if n_jobs < 0 else n_jobs)  # joblib: -1 = every core


def slots_per_gpu(jobs_per_gpu: int | str, jobs: int, gpus: int) -> int:
    """How many jobs may share one GPU: ``jobs_per_gpu``, or for ``auto`` an even share."""
    if str(jobs_per_gpu) == "auto":
        return max(1, math.ceil(jobs / max(1, gpus)))
    value = int(jobs_per_gpu)
    if value < 1:
        raise ConfigError(f"hydra.callbacks.gpu_slots.jobs_per_gpu={value}: expected auto or >= 1")
    return value


# This process's GPU, claimed by its first job and kept until the process exits: joblib
# reuses worker processes, and CUDA reads CUDA_VISIBLE_DEVICES only once per process.
_process_claim: DeviceClaim | None = None


class GpuSlots(Callback):
    """Place the jobs that run at once on one machine (joblib launcher) on its GPUs.

    At its first job a process locks a free slot of a visible GPU and sets
    ``CUDA_VISIBLE_DEVICES`` to it before CUDA starts. Each GPU has ``jobs_per_gpu`` slots,
    filled evenly; ``auto`` shares ``hydra.launcher.n_jobs`` evenly over the GPUs, and extra
    workers share a GPU, with a warning. Each job process gets ``cores // n_jobs`` torch
    threads (unless ``OMP_NUM_THREADS`` is set). Nothing is chosen without a visible GPU, for
    CPU or data-parallel jobs, or once CUDA is initialised (SLURM jobs get their own GPUs).
    """

    def __init__(
        self, enabled: bool = True, jobs_per_gpu: int | str = "auto", lock_dir: str | None = None
    ) -> None:
        self.enabled = enabled
        self.jobs_per_gpu = jobs_per_gpu
        self.lock_dir = lock_dir

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _process_claim
        if not self.enabled or _process_claim is not None:
            return
        jobs = parallel_jobs(config)
        torch = sys.modules.get("torch")
        if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch if not yet imported
            if torch is not None:
                torch.set_num_threads(threads)
        if not wants_one_gpu(config):
            return  # CPU jobs; DDP jobs (trainer=ddp) train on every visible GPU, not one
        if torch is not None and torch.cuda.is_initialized():
            log.info("CUDA already initialised in this process; not choosing a GPU")
            return
        candidates = visible_gpus()
        slots = slots_per_gpu(self.jobs_per_gpu, jobs, len(candidates))
        if not candidates or (len(candidates) == 1 and slots == 1):
            return  # nothing to choose
        lock_dir = Path(self.lock_dir) if self.lock_dir else default_lock_dir()
        _process_claim = claim_device(candidates, lock_dir, slots)
        os.environ["CUDA_VISIBLE_DEVICES"] = _process_claim.device
        if _process_claim.shared:
            log.warning(
                "all %d slots of %d GPUs are held by other jobs; process %d shares GPU %s "
                "(hydra.callbacks.gpu_slots.jobs_per_gpu sets the slots per GPU)",
                slots * len(candidates), len(candidates), os.getpid(), _process_claim.device,
            )
        else:
            log.info("process %d uses GPU %s", os.getpid(), _process_claim.device)
