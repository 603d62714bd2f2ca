"""Image-level classification branch: global average pooling of one or more feature maps, then a linear layer.

With a detector it makes the simplest stitched multi-task model (detection + "what is in this image").
Its targets are which classes appear in the image (multi-label), derived from the box labels, so any
detection dataset trains it::

    [[23], 1, Classify, [nc]]          # pooled P5 -> nc logits
    [[17, 20, 23], 1, Classify, [nc, 256]]  # pooled P3-P5, concatenated, a hidden layer of 256
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.registry import Row, register_module
from ..models.shape import Shape


@register_module()
class Classify(nn.Module):
    """Training: logits (bs, nc). Inference: class probabilities (bs, nc) (independent sigmoids)."""

    task = "cls"

    def __init__(self, nc: int, channels: list[int], hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.nc = nc
        self.pool = nn.AdaptiveAvgPool2d(1)
        c = sum(channels)
        layers: list[nn.Module] = [nn.Flatten()]
        if hidden:
            layers += [nn.Linear(c, hidden), nn.SiLU()]
            c = hidden
        layers += [nn.Dropout(dropout), nn.Linear(c, nc)]
        self.fc = nn.Sequential(*layers)

    @classmethod
    def from_row(cls, row: Row) -> tuple[Classify, Shape | None]:
        if not row.args or not isinstance(row.args[0], int) or row.args[0] < 1:
            raise row.error(f"Classify needs [nc, hidden=0, dropout=0.0], got {row.args}")
        return row.construct(cls, row.args[0], [s.channels for s in row.inputs], *row.args[1:]), None

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> Any:
        features = x if isinstance(x, (list, tuple)) else [x]
        logits = self.fc(torch.cat([self.pool(f) for f in features], 1))
        return logits if self.training else logits.sigmoid()
