"""The project's own error classes: bad input from the user, said in one line.

Every check of what a user gives (a setting, a command-line argument, a corpus folder, a
manifest, an audio file, a checkpoint, an output path) raises an `InputError` whose message
names the setting or the file and says what was expected. The commands print that message
as one line and exit with code 2 (ser.cli.run_cli); any other exception is a bug and keeps
its traceback. `SER_TRACEBACK=1` shows the traceback of an `InputError` too.

A leaf module (it imports nothing), so every layer may raise these: the layers' own classes
(`ConfigError`, `CorpusError`, `AudioFileError`, `CheckpointError`, ...) derive from it.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user; the message names it and says what was expected (exit 2)."""


class InputNotFound(InputError, FileNotFoundError):
    """A file or folder the user named that does not exist."""


class ConfigError(InputError):
    """A setting with a value the framework cannot use; the message names the setting."""


class NonFiniteError(InputError):
    """Numbers that are not finite (NaN, infinity) where the data or the settings made them:
    features, a loss, probabilities. The run stops, naming the file or the fold."""
