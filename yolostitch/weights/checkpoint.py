"""yolostitch's own checkpoints: plain types and tensors only, written atomically.

``torch.load(path, weights_only=True)`` reads them; nothing in them is code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "yolostitch"
FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it.

    A run killed at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> Path:
    """Save a model's config, names and float32 weights, plus ``extra`` (epoch, hyp, optimizer state...)."""
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.yaml,
            "names": dict(model.names), "model": state, **extra}
    return atomic_save(ckpt, path)


def is_own_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT
