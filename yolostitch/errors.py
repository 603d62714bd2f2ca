"""The errors that report a mistake in what the user gave: a flag, a model or hyperparameter YAML, a dataset, a
weights file, or a missing part of the set-up.

They all derive from :class:`YolostitchError`, which the command line prints as one line without a traceback
(exit code 2); any other exception is a bug or an accident of the machine (out of memory, a full disk) and
keeps its traceback. Each also derives from the built-in type that the same check raised before
(``ValueError`` or ``RuntimeError``), so ``except ValueError`` and ``pytest.raises(ValueError)`` still catch it.
"""

from __future__ import annotations


class YolostitchError(Exception):
    """Base of the user-facing errors; the message names the flag, file or layer, what was expected and what
    came."""


class FlagError(YolostitchError, ValueError):
    """A command-line flag (or option of the Python API) whose value, or combination with another, cannot work."""


class ConfigError(YolostitchError, ValueError):
    """A model YAML (or hyperparameter YAML) that cannot be built or used; the message names the file and row."""


class DataError(YolostitchError, ValueError):
    """A dataset, data YAML, label or annotation file that cannot be used; the message names the file."""


class WeightsError(YolostitchError, RuntimeError):
    """A weights file or checkpoint that cannot be loaded or does not fit what it is used for."""


class SetupError(YolostitchError, RuntimeError):
    """This installation lacks something the command needs (a package, a codec); the message says what."""


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` reports the user's mistake (one clean line) rather than a bug (a traceback).

    A missing file the user named (``FileNotFoundError``) counts as the user's."""
    return isinstance(error, (YolostitchError, FileNotFoundError))
