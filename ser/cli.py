"""The command-line convention: expected errors become one clear line, not a traceback.

Every command takes Hydra-style ``key=value`` arguments and answers ``--help``. The Hydra
commands (training, the data summary) get both from Hydra; the small tools (predict,
export, complexity, gather, the benchmarks, the GPU check) parse theirs with
`parse_key_values` from a dataclass whose fields say what each key means (`sweep.py`
keeps its subcommands: `run` hands its own arguments to Hydra). All of them report expected errors through `run_cli`:
one line on stderr and exit code 2. ser/commands.py lists the commands.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
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


def describe_arguments(schema: type) -> str:
    """One line per ``key=value`` argument of the dataclass ``schema``: its help (the
    field's ``metadata["help"]``) and its default, or that it is required."""
    lines = ["arguments:"]
    for field in dataclasses.fields(schema):
        default = field.default
        if field.default_factory is not dataclasses.MISSING:  # a list's default
            default = field.default_factory()
        if isinstance(default, list):  # as it is typed on the command line
            where = f"default: [{','.join(map(str, default))}]"
        elif default is dataclasses.MISSING or default == "???":
            where = "required"
        else:
            where = f"default: {OmegaConf.to_yaml({'v': default}).strip()[3:]}"
        lines.append(f"  {field.name + '=...':<22} {field.metadata.get('help', '')} ({where})")
    return "\n".join(lines)


def parse_key_values(argv: Sequence[str], schema: type, usage: str) -> DictConfig:
    """Parse Hydra-style ``key=value`` arguments into the dataclass ``schema``'s config.

    The small entry points (``python -m ser.tools.predict``, ``ser.tools.export``) use this instead
    of ``@hydra.main``, which would create an output directory per call. Unknown keys,
    missing required values (``???``) and ill-typed values raise a ``ValueError`` naming the key, which
    :func:`run_cli` reports without a traceback.
    """
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"{usage}\n\n{describe_arguments(schema)}")
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
