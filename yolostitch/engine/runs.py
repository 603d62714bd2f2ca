"""Run directories in the stock style (runs/train/exp, exp2, ...) and device selection."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch


def increment_path(path: str | Path, exist_ok: bool = False) -> Path:
    """``runs/val/exp`` if free (or ``exist_ok``), else the next free ``exp2``, ``exp3``, ... ; created."""
    path = Path(path)
    if not exist_ok and path.exists():
        base, siblings = path.name, path.parent.glob(f"{path.name}*")
        numbers = [int(m.group(1)) for p in siblings if (m := re.fullmatch(rf"{re.escape(base)}(\d+)", p.name))]
        path = path.with_name(f"{base}{max(numbers, default=1) + 1}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def select_device(device: str = "") -> torch.device:
    """``''`` (first GPU if any, else CPU), ``'cpu'``, ``'0'`` or ``'0,1'`` (CUDA ids), ``'mps'``."""
    device = str(device).strip().lower().replace("cuda:", "")
    if device in ("cpu", "mps"):
        return torch.device(device)
    if device:
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA requested but not available (use --device cpu)")
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", device)
        return torch.device("cuda:0")
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
