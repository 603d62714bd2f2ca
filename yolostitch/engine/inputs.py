"""What a batch feeds the model: the image, the cached feature maps, or maps from a frozen extractor run online."""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import FlagError

logger = logging.getLogger(__name__)

Extractor = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def model_input(batch: dict[str, Any], device: torch.device, extractor: Extractor | None = None) -> Any:
    """Cached maps (as float32) if the batch has them; else the 0..1 image, through ``extractor`` if given (the
    image rides along under ``"image"`` for models that read both)."""
    if "features" in batch:
        return {k: v.to(device, non_blocking=True).float() for k, v in batch["features"].items()}
    images = batch["img"].to(device, non_blocking=True).float() / 255
    if extractor is None:
        return images
    with torch.no_grad():
        maps = extractor(images)
    return {**maps, "image": images}


def input_size(batch: dict[str, Any]) -> tuple[int, int]:
    """(h, w) of the letterboxed network input the batch's labels are in."""
    if "img" in batch:
        return tuple(batch["img"].shape[2:])
    return tuple(batch["input_hw"][0])


def multi_scale(images: torch.Tensor, imgsz: int, stride: int) -> torch.Tensor:
    """Stock's ``--multi-scale``: the batch resized (bilinear) so that its long side is a random multiple of
    ``stride`` between 0.5x and 1.5x ``imgsz``, each side rounded up to a multiple of ``stride``. Labels are
    normalised, so they stay as they are."""
    size = random.randrange(int(imgsz * 0.5), int(imgsz * 1.5) + stride) // stride * stride
    factor = size / max(images.shape[2:])
    if factor == 1:
        return images
    shape = [math.ceil(side * factor / stride) * stride for side in images.shape[2:]]
    return F.interpolate(images, size=shape, mode="bilinear", align_corners=False)


def stride_shape(imgsz: int | Sequence[int], stride: int) -> tuple[int, int]:
    """``--imgsz`` (one size or height, width) as (h, w), each rounded up to a multiple of ``stride`` with a
    warning, as stock's check_img_size."""
    wanted = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(int(v) for v in imgsz)
    if len(wanted) != 2 or min(wanted) < 1:
        raise FlagError(f"--imgsz takes one positive size or two (height width), got {imgsz}")
    shape = tuple(math.ceil(v / stride) * stride for v in wanted)
    if shape != wanted:
        given = " ".join(str(v) for v in ([imgsz] if isinstance(imgsz, int) else wanted))
        logger.warning("WARNING: --imgsz %s must be a multiple of the max stride %d, using %s", given, stride,
                       " ".join(str(v) for v in (shape[:1] if isinstance(imgsz, int) else shape)))
    return shape
