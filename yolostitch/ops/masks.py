"""Instance-mask geometry shared by the mask loss and mask evaluation."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Instance masks (n, h, w) as bool masks of ``size`` (bilinear, then > 0.5 when the size changes)."""
    size = (int(size[0]), int(size[1]))
    if tuple(masks.shape[-2:]) == size or not len(masks):
        return masks.bool().reshape(len(masks), *size)
    return F.interpolate(masks[None].float(), size, mode="bilinear", align_corners=False)[0] > 0.5
