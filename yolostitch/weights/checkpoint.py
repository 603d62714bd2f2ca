"""yolostitch's own checkpoints: plain types and tensors only, written atomically.

``torch.load(path, weights_only=True)`` reads them; nothing in them is code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write

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
