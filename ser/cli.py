"""Entry-point helpers: turn expected errors into one clear line instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

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
    try:
        return function(cfg)
    except (InstantiationException, *EXPECTED_ERRORS) as error:
        cause = expected_cause(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
