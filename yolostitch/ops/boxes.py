"""Box geometry shared by training, evaluation and inference."""

from __future__ import annotations

import torch
from torch import Tensor


def xywh2xyxy(x: Tensor) -> Tensor:
    """Boxes as centre, width, height (first 4 columns) -> corners; other columns are kept."""
    y = x.clone()
    y[..., :2] = x[..., :2] - x[..., 2:4] / 2
    y[..., 2:4] = x[..., :2] + x[..., 2:4] / 2
    return y


def box_crop(boxes_xyxy: Tensor, height: int, width: int) -> Tensor:
    """(m, h, w) bool: which pixels (centres) of an h x w map lie inside each box (given in map pixels)."""
    x = torch.arange(width, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype).view(1, 1, -1) + 0.5
    y = torch.arange(height, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype).view(1, -1, 1) + 0.5
    x1, y1, x2, y2 = (boxes_xyxy[:, i].view(-1, 1, 1) for i in range(4))
    return (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
