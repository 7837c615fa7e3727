"""`model.net.implementation=auto`: the implementation measured fastest where the run trains.

MS-SENet and TIM-Net have two computations of the same parameters (ser/models):
`reference`, the direct transcription, and `fast`, tuned for CPUs (patch GEMMs, fused C
kernels). `auto` is resolved here, once, when the network is built, from the records in
docs/bench/ (`python -m benchmarks.bench device=...`): `fast` on a CPU (13-16x the
reference's MS-SENet training rate on 2 cores), `reference` on CUDA (2.7x and 2.9x the
fast rate on an H200, where kernel launches are the cost). The fast formulation computes
in float32 only: under bf16 autocast `auto` takes the reference and `fast` is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ser.errors import ConfigError
from ser.models.implementations import IMPLEMENTATIONS as IMPLEMENTATION_TABLE
from ser.settings import Settings
from ser.training.compile_cache import use_private_compile_cache

IMPLEMENTATIONS = tuple(IMPLEMENTATION_TABLE)  # the networks' own table decides the names
# Device type -> the implementation measured fastest there (docs/bench/README.md).
FASTEST_ON_DEVICE = {"cpu": "fast", "cuda": "reference"}
# Devices without a measurement (Apple's MPS, ...) get the plain PyTorch computation.
UNMEASURED_DEVICE_CHOICE = "reference"
FULL_PRECISION = ("32-true", "32", "64-true", "64")


def device_type(accelerator: Any) -> str:
    """The device type a Lightning `accelerator` setting trains on: cpu, cuda or mps."""
    name = str(accelerator).lower()
    if name == "cpu":
        return "cpu"
    if name in ("gpu", "cuda"):
        return "cuda"
    if name == "mps":
        return "mps"
    if name == "auto":  # Lightning's own order of preference
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return name  # tpu and others: no measurement, see UNMEASURED_DEVICE_CHOICE


def is_full_precision(precision: Any) -> bool:
    return str(precision) in FULL_PRECISION


def resolve_implementation(
    requested: str, device: str, precision: Any = "32-true", compiled: bool = False
) -> str:
    """The implementation a network built for `device` at `precision` uses.

    `requested` is `model.net.implementation`: `auto`, `reference` or `fast`.
    Raises ConfigError (one line, exit code 2) for an unknown name, and for `fast` with a
    mixed precision, which it cannot compute, or compiled (`model.compile`): its Python
    autograd functions and C kernels are opaque to torch.compile, so `auto` then takes
    the reference.
    """
    if requested not in (*IMPLEMENTATIONS, "auto"):
        raise ConfigError(
            f"model.net.implementation={requested}: expected auto, "
            + " or ".join(IMPLEMENTATIONS)
        )
    if compiled:
        if requested == "fast":
            raise ConfigError(
                "model.net.implementation=fast cannot be compiled (model.compile): "
                "use model.net.implementation=auto or reference"
            )
        return "reference"
    if not is_full_precision(precision):
        if requested == "fast":
            raise ConfigError(
                f"model.net.implementation=fast computes in float32 only, but "
                f"trainer.precision={precision}: use model.net.implementation=auto or reference"
            )
        return "reference"
    if requested != "auto":
        return requested
    return FASTEST_ON_DEVICE.get(device, UNMEASURED_DEVICE_CHOICE)


def resolve_for_run(settings: Settings) -> str | None:
    """The implementation of the run's network, from `model.net.implementation`, the
    trainer's device and precision, and `model.compile`; None without such a setting."""
    requested = settings.model.net.implementation
    if requested is None:
        return None
    trainer, compiled = settings.trainer, settings.model.compile is not None
    return resolve_implementation(requested, device_type(trainer.accelerator), trainer.precision, compiled)


def check_implementation(settings: Settings) -> str | None:
    """`model.compile` and the implementation the run's network will use, checked before
    anything is built (ConfigError: one line, exit code 2); a compiled run's kernel cache
    is made private here (ser.training.compile_cache)."""
    from ser.training.module import check_compile_mode

    try:
        mode = check_compile_mode(settings.model.compile)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if mode is not None:
        use_private_compile_cache()
    return resolve_for_run(settings)


def instantiate_network(net: Mapping[str, Any], device: str = "cpu", **arguments: Any) -> torch.nn.Module:
    """The network a `model.net` config (`net`, resolved) describes, its `auto` resolved for `device`.

    For code that builds a network from the config outside a run (the complexity table,
    notebooks): `instantiate(net)` itself cannot build `auto`, which only a device
    decides. `arguments` are the constructor's (num_classes, input_dim, ...).
    """
    from hydra.utils import instantiate

    requested = arguments.pop("implementation", net.get("implementation"))
    if requested is not None:
        arguments["implementation"] = resolve_implementation(str(requested), device)
    return instantiate(net, **arguments)
