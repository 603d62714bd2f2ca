"""yolostitch's own checkpoints: plain types and tensors only, written atomically.

``torch.load(path, weights_only=True)`` reads them; nothing in them is code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write
from ..errors import ConfigError, WeightsError
from ..models.config import validate_model_config

FORMAT = "yolostitch"
FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it.

    A run killed at any moment leaves either the old file or the new one, never a torn one.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict on the CPU, floating tensors as float32."""
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def checkpoint_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None, **extra: Any) -> dict[str, Any]:
    """Config, names and weights (``state``, default the model's own), plus ``extra`` (epoch, hyp, ...)."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.yaml, "names": dict(model.names),
            "model": plain_state(model.state_dict() if state is None else state), **extra}


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> Path:
    """Save a model's config, names and float32 weights, plus ``extra`` (epoch, hyp, optimizer state...)."""
    return atomic_save(checkpoint_dict(model, **extra), path)


def is_own_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def check_own_checkpoint(obj: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``obj`` (one of our checkpoints, as read) if it has the structure :func:`checkpoint_dict` writes, else a
    :class:`WeightsError` naming ``path`` and the entry that is wrong. Every reader goes through this (via
    ``read_checkpoint``), so later code may index ``config``, ``model`` and ``names`` without checking."""
    version = obj.get("format_version")
    if not _is_int(version) or version < 1:
        raise WeightsError(f"{path}: 'format_version' must be a positive integer, got {_brief(version)}")
    if version > FORMAT_VERSION:
        raise WeightsError(f"{path}: written by a newer yolostitch (format {version}, this reads up to "
                           f"{FORMAT_VERSION}); load it with that version")
    if "config" not in obj:
        raise WeightsError(f"{path}: has no 'config' (the model config it was built from), so its architecture "
                           "cannot be rebuilt")
    try:
        validate_model_config(obj["config"], f"{path}: its 'config'")
    except ConfigError as e:
        raise WeightsError(str(e)) from None
    state = obj.get("model")
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: 'model' must be a state dict (parameter names to tensors), got "
                           f"{_brief(state)}")
    bad = next(((k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise WeightsError(f"{path}: 'model' must be a state dict (parameter names to tensors), but entry "
                           f"{bad[0]!r} is {_brief(bad[1])}")
    names = obj.get("names")
    if names is not None and not (isinstance(names, dict) and all(
            (_is_int(k) or (isinstance(k, str) and k.isdigit())) and isinstance(v, str) for k, v in names.items())):
        raise WeightsError(f"{path}: 'names' must map class indices to names ({{0: 'person', 1: 'car'}}), got "
                           f"{_brief(names)}")
    plugins = obj.get("plugins")
    if plugins is not None and not (isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)):
        raise WeightsError(f"{path}: 'plugins' must be a list of plugin names, got {_brief(plugins)}")
    return obj


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _brief(value: Any) -> str:
    """A value for an error message: its type, and its text when short."""
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 60 else f"a {type(value).__name__} ({text[:57]}...)"
