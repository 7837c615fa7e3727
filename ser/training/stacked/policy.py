"""`cv.stack`: whether the folds a job runs train together, in one Trainer (ser.training.stacked).

- `false`: one fold after another, each in a Trainer of its own (ser.training.fold);
- `true`: every unfinished fold of the job together; refused (exit code 2) with settings
  whose meaning is per fold and that one Trainer of several folds cannot keep;
- `auto` (the default): together where stacking was measured faster for the run's device
  and network implementation (`STACKED_FASTER_ON`), and where no such setting is given;
  else one after another.

Each fold computes the same thing either way, up to floating-point order (the folds'
networks run as one program, ser.models.stacked), which is why `cv.stack` is part of the
config hash like any setting that changes results.
"""

from __future__ import annotations

from typing import Any

from ser.errors import ConfigError
from ser.settings import Settings
from ser.training.distributed import uses_several_processes
from ser.training.implementation import device_type, resolve_for_run

# (device type, implementation) -> whether stacked folds train faster there than one
# fold after another, as `python -m benchmarks.bench folds=true` measured the default demo
# (docs/bench/README.md): on the 2-core CPU, MS-SENet's fast implementation trained
# 1.56x as many samples/s with 2 threads (1.50x with 1). Nothing else has been measured:
# the reference on a CPU, and any GPU (where `auto` stays off until one is).
STACKED_FASTER_ON = {("cpu", "fast"): True}
# Lightning strategies of one process on one device (DDP wraps the module, which the
# folds' own optimisers and absent folds do not fit).
SINGLE_DEVICE_STRATEGIES = ("auto", "single_device")

# Trainer settings counted per fold (steps, batches, time, gradient handling) whose
# meaning one Trainer of several folds does not keep, with the values that leave them
# unused (Lightning's defaults).
NEUTRAL_TRAINER_SETTINGS: dict[str, tuple[Any, ...]] = {
    "gradient_clip_val": (None, 0, 0.0),
    "accumulate_grad_batches": (1,),
    "max_steps": (-1, None),
    "min_steps": (None,),
    "max_time": (None,),
    "limit_train_batches": (None, 1, 1.0),
    "limit_val_batches": (None, 1, 1.0),
    "val_check_interval": (None, 1, 1.0),
    "check_val_every_n_epoch": (None, 1),
    "overfit_batches": (0, 0.0),
    "fast_dev_run": (False, 0),
    "reload_dataloaders_every_n_epochs": (0,),
}
# float16 training scales the loss, and Lightning updates the scale after each
# optimiser's step: with one optimiser per fold, the folds would share a scale.
SCALED_PRECISIONS = ("16", "16-mixed")
# The callbacks a stacked run keeps per fold (ser.training.stacked.records).
PER_FOLD_CALLBACKS = ("checkpoint", "early_stopping")


def unsupported_settings(settings: Settings) -> list[str]:
    """The settings of the run that stacked folds cannot honour, as `key=value`."""
    found = []
    trainer = settings.trainer
    if uses_several_processes(trainer):
        found.append(f"trainer.devices={trainer.devices} (several processes)")
    if trainer.strategy not in SINGLE_DEVICE_STRATEGIES:
        found.append(f"trainer.strategy={trainer.strategy}")
    for key, neutral in NEUTRAL_TRAINER_SETTINGS.items():
        value = trainer.get(key, neutral[0])
        if value not in neutral:
            found.append(f"trainer.{key}={value}")
    if trainer.precision in SCALED_PRECISIONS:
        found.append(f"trainer.precision={trainer.precision}")
    for name in settings.callbacks.nodes:
        if name not in PER_FOLD_CALLBACKS:
            found.append(f"callbacks.{name}")
    if settings.model.has_scheduler:
        found.append("model.scheduler")
    # W&B's checkpoint artifacts come from each fold's ModelCheckpoint, which a stacked
    # fold does not have (its FoldTrack writes last.ckpt).
    wandb = settings.logger.wandb
    if wandb is not None and wandb.get("log_model"):
        found.append(f"logger.wandb.log_model={wandb.get('log_model')}")
    return found


def resolve_stacking(settings: Settings) -> bool:
    """Whether this run trains its folds together: `cv.stack` (true, false or auto,
    checked with the cv settings), with `auto` decided by the trainer's device and the
    network's implementation; ConfigError for `true` with a setting it cannot honour."""
    choice = settings.cv.stack
    if choice is False:
        return False
    blocking = unsupported_settings(settings)
    if choice is True:
        if blocking:
            raise ConfigError(
                f"cv.stack=true trains the folds in one Trainer, which cannot honour "
                f"{blocking[0]} per fold; use cv.stack=false"
            )
        return True
    if blocking:
        return False
    return STACKED_FASTER_ON.get((device_type(settings.trainer.accelerator), resolve_for_run(settings)), False)
