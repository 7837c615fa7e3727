"""Entry points and their helpers: expected errors become one clear line, not a traceback.

`train_main` is the training command (`python train.py`, `python -m ser.training`); the
other commands live with what they run (`python -m ser.data`, ser.tools, ser.sweeps) and
share `run_cli` and, for the small ones, `parse_key_values`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ser.conf import CONFIG_PATH, ROOT_CONFIG

# Errors whose message already names the file or the setting and what was expected.
# Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, NotADirectoryError, OmegaConfBaseException,
)


def expected_cause(error: BaseException) -> BaseException | None:
    """The user-facing error inside Hydra's wrapping, or None for an unexpected one."""
    cause: BaseException | None = error
    while isinstance(cause, InstantiationException):
        cause = cause.__cause__
    return cause if isinstance(cause, EXPECTED_ERRORS) else None


def run_cli(function: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call `function(cfg)`; an expected error ends the process with its message, exit 2."""
    try:
        return function(cfg)
    except (InstantiationException, *EXPECTED_ERRORS) as error:
        cause = expected_cause(error)
        if cause is None:
            raise
        message = str(cause)
        if isinstance(cause, OmegaConfBaseException):  # its message goes on with key details
            message = message.splitlines()[0]
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_key_values(argv: Sequence[str], schema: type, usage: str) -> DictConfig:
    """Parse Hydra-style ``key=value`` arguments into the dataclass ``schema``'s config.

    The small entry points (``python -m ser.tools.predict``, ``ser.tools.export``) use this instead
    of ``@hydra.main``, which would create an output directory per call. Unknown keys,
    missing required values (``???``) and ill-typed values raise a ``ValueError`` naming the key, which
    :func:`run_cli` reports without a traceback.
    """
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage)
        sys.exit(0)
    malformed = [arg for arg in argv if "=" not in arg or arg.startswith("=")]
    if malformed:
        raise ValueError(f"expected key=value arguments, got {malformed[0]!r}\n{usage}")
    defaults = OmegaConf.structured(schema)
    try:
        cfg = OmegaConf.merge(defaults, OmegaConf.from_dotlist(list(argv)))
    except OmegaConfBaseException as error:
        # omegaconf's messages span several lines; one line naming the key is enough.
        key = getattr(error, "full_key", None) or "?"
        reason = str(error).splitlines()[0]
        raise ValueError(f"argument {key!r}: {reason}\n{usage}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing required argument(s): {', '.join(f'{k}=...' for k in missing)}\n{usage}")
    return cfg


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=ROOT_CONFIG)
def train_main(cfg: DictConfig) -> float:
    """`python train.py [OVERRIDES]`: the experiment the composed config describes.

    Returns the objective, which a Hydra sweeper (Optuna) maximises.
    """
    from ser.training.engine import train

    return run_cli(train, cfg)
