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
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    if not isinstance(value, dict):
        raise error(f"{path}: a {what} must be a mapping, got {type(value).__name__}")
    return value
