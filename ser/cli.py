"""The command-line convention: expected errors become one clear line, not a traceback.

Every command takes Hydra-style ``key=value`` arguments and answers ``--help``. The Hydra
commands (training, the data summary) get both from Hydra; the small tools (predict,
export, complexity, gather, the benchmarks, the GPU check) parse theirs with
`parse_key_values` from a dataclass whose fields say what each key means (`sweep.py`
keeps its subcommands: `run` hands its own arguments to Hydra). All of them report the
project's own errors (ser.errors) through `run_cli`: one line on stderr and exit code 2;
`SER_TRACEBACK=1` shows their traceback instead. Any other exception is a bug and keeps
its traceback. ser/commands.py lists the commands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from ser.errors import ConfigError, InputError
from ser.settings.rules import field_rule, shown

# Set to 1 to see the traceback of an expected error too (a developer's switch).
TRACEBACK_ENV = "SER_TRACEBACK"
HYDRA_FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
T = TypeVar("T")


def show_traceback() -> bool:
    """Whether `SER_TRACEBACK=1` asks for tracebacks instead of one-line errors."""
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes")


def expected_cause(error: BaseException) -> InputError | None:
    """The project's own error inside Hydra's wrapping, or None for any other (a bug)."""
    cause: BaseException | None = error
    while isinstance(cause, InstantiationException):
        cause = cause.__cause__
    return cause if isinstance(cause, InputError) else None


def exit_with(message: str) -> NoReturn:
    """Print `error: MESSAGE` on stderr and end the process with exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_cli(function: Callable[[Any], Any], cfg: Any) -> Any:
    """Call `function(cfg)`; the project's own errors (ser.errors.InputError) end the
    process with their message and exit code 2. Everything else is a bug and keeps its
    traceback, as does every error with `SER_TRACEBACK=1`."""
    try:
        return function(cfg)
    except (InstantiationException, InputError) as error:
        cause = expected_cause(error)
        if cause is None or show_traceback():
            raise
        exit_with(str(cause))


def schema_refusal(error: BaseException) -> str | None:
    """A value a group's schema (ser.settings.data) refused as the config was composed,
    said as the settings' own check says it (`cv.folds=abc: expected a whole number >= 2,
    or null`); None for any other error, or a field without a range."""
    cause = error.__cause__
    if not isinstance(cause, ValidationError):
        return None
    schema, key = getattr(cause, "object_type", None), getattr(cause, "key", None)
    if not isinstance(schema, type) or not dataclasses.is_dataclass(schema) or not isinstance(key, str):
        return None
    rule = field_rule(schema, key)
    return None if rule is None else f"{cause.full_key}={shown(cause.value)}: expected {rule.describe()}"


def hydra_error_message(error: BaseException) -> str:
    """One line of a Hydra error about the command line (an unknown key or option, an override
    that does not parse, a value of the wrong type); Hydra's own text spans several lines and
    lists its search path."""
    refused = schema_refusal(error)
    if refused is not None:
        return refused
    lines = []
    for line in (line.strip() for line in str(error).splitlines()):
        if line.startswith(("Config search path", "See https://", "Available options in")):
            break
        if line:
            lines.append(line.rstrip("."))
    first, rest = (lines[0] if lines else type(error).__name__), lines[1:]
    if isinstance(error.__cause__, OmegaConfBaseException):  # a key the config does not have
        first += f" ({str(error.__cause__).splitlines()[0]})"
    override = getattr(error, "override", None)
    if override and override not in first:  # OverrideParseException: which argument
        first = f"{override}: {first}"
    options = getattr(error, "options", None)
    if options:  # MissingConfigException: an option the group does not have
        rest = [f"expected one of: {', '.join(options)}"]
    return "; ".join([first, *(line[:1].lower() + line[1:] for line in rest)])


@contextlib.contextmanager
def hydra_errors_in_one_line() -> Iterator[None]:
    """Hydra's errors about the command line as one line and exit code 2.

    Hydra prints them over several lines (with its search path) and exits with 1, unless
    `HYDRA_FULL_ERROR=1` asks it to raise them: set here, so that they reach this block.
    """
    previous = os.environ.get(HYDRA_FULL_ERROR_ENV)
    os.environ[HYDRA_FULL_ERROR_ENV] = "1"
    try:
        yield
    except (ConfigCompositionException, OverrideParseException) as error:
        if show_traceback():
            raise
        exit_with(hydra_error_message(error))
    finally:
        if previous is None:
            os.environ.pop(HYDRA_FULL_ERROR_ENV, None)
        else:
            os.environ[HYDRA_FULL_ERROR_ENV] = previous


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


def parse_key_values(argv: Sequence[str], schema: type[T], usage: str) -> T:
    """Parse Hydra-style ``key=value`` arguments into an instance of the dataclass ``schema``.

    The small entry points (``python -m ser.tools.predict``, ``ser.tools.export``) use this instead
    of ``@hydra.main``, which would create an output directory per call. Unknown keys,
    missing required values (``???``) and ill-typed values raise a ``ConfigError`` naming the key, which
    :func:`run_cli` reports without a traceback.
    """
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"{usage}\n\n{describe_arguments(schema)}")
        sys.exit(0)
    malformed = [arg for arg in argv if "=" not in arg or arg.startswith("=")]
    if malformed:
        raise ConfigError(f"expected key=value arguments, got {malformed[0]!r}\n{usage}")
    defaults = OmegaConf.structured(schema)
    try:
        cfg = OmegaConf.merge(defaults, OmegaConf.from_dotlist(list(argv)))
    except OmegaConfBaseException as error:
        # omegaconf's messages span several lines; one line naming the key is enough.
        key = getattr(error, "full_key", None) or "?"
        reason = str(error).splitlines()[0]
        raise ConfigError(f"argument {key!r}: {reason}\n{usage}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required argument(s): {', '.join(f'{k}=...' for k in missing)}\n{usage}")
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
