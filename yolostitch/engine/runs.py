"""Run directories in the stock style (runs/train/exp, exp2, ...) and device selection."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch

from ..errors import FlagError

LOGGER = logging.getLogger("yolostitch")


def increment_path(path: str | Path, exist_ok: bool = False) -> Path:
    """``runs/val/exp`` if free (or ``exist_ok``), else the next free ``exp2``, ``exp3``, ... ; created."""
    path = Path(path)
    if not exist_ok and path.exists():
        base, siblings = path.name, path.parent.glob(f"{path.name}*")
        numbers = [int(m.group(1)) for p in siblings if (m := re.fullmatch(rf"{re.escape(base)}(\d+)", p.name))]
        path = path.with_name(f"{base}{max(numbers, default=1) + 1}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_device(device: str, device_count: int, local_rank: int | None = None, mps_available: bool = False) -> str:
    """The torch device (``'cpu'``, ``'mps'``, ``'cuda:N'``) that ``--device`` means for this process.

    ``device``: ``''`` (the first GPU if any, else the CPU), ``'cpu'``, ``'mps'``, or CUDA ids ``'1'``,
    ``'2,3'``, ``'cuda:1'``, ``'cuda'`` (ids count among the ``device_count`` GPUs torch sees, i.e. those that
    ``CUDA_VISIBLE_DEVICES`` leaves visible). One process takes the first listed id. Under torchrun
    (``local_rank`` given), process LOCAL_RANK takes the LOCAL_RANK-th listed id (all visible GPUs when none
    are listed): ``--device 2,3`` puts LOCAL_RANK 1 on ``cuda:3``. Pure (no torch or CUDA calls): testable
    without a GPU.
    """
    text = str(device).strip().lower()
    flag = f"--device {str(device).strip() or '(default)'}"
    if text in ("cpu", "mps"):
        if text == "mps" and local_rank is not None:
            raise FlagError(f"{flag}: torch.distributed trains on CUDA (NCCL) or the CPU (gloo), not on mps")
        if text == "mps" and not mps_available:
            raise FlagError(f"{flag}: Apple MPS is not available to this torch; use --device cpu")
        return text
    if text in ("", "cuda"):
        if device_count == 0 and not text:
            return "cpu"
        ids = list(range(device_count))
    else:
        ids = _cuda_ids(text, flag)
    if device_count == 0:
        raise FlagError(f"{flag}: CUDA requested but torch sees no CUDA device; use --device cpu")
    absent = [i for i in ids if i >= device_count]
    if absent:
        visible = "id 0" if device_count == 1 else f"ids 0-{device_count - 1}"
        raise FlagError(f"{flag}: no CUDA device {', '.join(map(str, absent))}; torch sees {device_count} GPU(s), "
                         f"{visible} (counted among those CUDA_VISIBLE_DEVICES leaves visible)")
    if local_rank is None:
        if len(ids) > 1 and text not in ("", "cuda"):
            LOGGER.warning(f"{flag}: one process trains on cuda:{ids[0]} only; launch torchrun --nproc_per_node "
                           f"{len(ids)} to use every listed GPU")
        return f"cuda:{ids[0]}"
    if not 0 <= local_rank < len(ids):
        listed = text not in ("", "cuda")
        raise FlagError(f"{flag}: no GPU for the process with LOCAL_RANK {local_rank}: {len(ids)} "
                         f"{'listed' if listed else 'visible'} ({', '.join(map(str, ids))}); launch at most {len(ids)} "
                         f"processes per node (torchrun --nproc_per_node {len(ids)}), or "
                         f"{'list more devices' if listed else 'use --device cpu'}")
    return f"cuda:{ids[local_rank]}"


def _cuda_ids(text: str, flag: str) -> list[int]:
    """``'0'``, ``'2,3'``, ``'cuda:1'``, ``'cuda:0,1'`` -> CUDA ids, in order; anything else is an error."""
    items = [item.strip().removeprefix("cuda:").strip() for item in text.split(",")]
    if not all(item.isdigit() and item.isascii() for item in items):
        raise FlagError(f"{flag}: expected cpu, mps, or comma-separated CUDA device ids such as 0, 2,3 or cuda:1")
    ids = [int(item) for item in items]
    if len(set(ids)) != len(ids):
        raise FlagError(f"{flag}: a CUDA device is listed more than once")
    return ids


def select_device(device: str | torch.device = "", local_rank: int | None = None) -> torch.device:
    """The device ``--device`` names (see :func:`parse_device`), made the current CUDA device when it is one.

    The choice is an explicit ``cuda:N``: ``CUDA_VISIBLE_DEVICES`` is never set here, since CUDA may already
    be initialised by then and would ignore it.
    """
    mps = getattr(torch.backends, "mps", None)
    chosen = torch.device(parse_device(str(device), torch.cuda.device_count(), local_rank,
                                       bool(mps and mps.is_available())))
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    return chosen


def synced_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done: CUDA kernels run asynchronously, so without
    the synchronisation a timing would measure the launch and the compute would show up under the next step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
