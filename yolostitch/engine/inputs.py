"""What a batch feeds the model: the image, the cached feature maps, or maps from a frozen extractor run online."""

from __future__ import annotations

import math
import random
from typing import Any, Callable

import torch
import torch.nn.functional as F

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
