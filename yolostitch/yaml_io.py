"""Reading the project's YAML files (models, data, hyperparameters): ``yaml.safe_load`` only, errors name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(path: Path, error: type[Exception] = ValueError, what: str = "config") -> dict[str, Any]:
    """The mapping in ``path``; ``error`` (naming the file) if it is not valid YAML or not a mapping.

    ``safe_load`` builds plain types only: a ``!!python/...`` tag is a YAML error, never an object.
    """
    try:
        value = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text (expected a {what} in YAML)") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({_one_line(e)})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: a {what} must be a mapping, got {type(value).__name__}")
    return value


def _one_line(e: yaml.YAMLError) -> str:
    """PyYAML's error (several lines, with a caret drawing) as one line: where, and what was wrong."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(e, "context", None)
    return f"{where}{problem}" + (f", {context}" if context else "")
