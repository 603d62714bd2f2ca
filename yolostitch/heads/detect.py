"""YOLOv5's anchor-based detection head, with strides known from the input shapes (no dummy pass).

State-dict layout equals stock YOLOv5 (``m.{i}.weight/bias`` and the ``anchors`` buffer in grid units),
so stock checkpoints load unchanged. Decoding follows stock: ``xy = (2*sigmoid - 0.5 + cell) * stride``,
``wh = (2*sigmoid)**2 * anchor``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..models.registry import Row, register_module
from ..models.shape import Shape
from .per_anchor import PerAnchorHead


@register_module()
class Detect(PerAnchorHead):
    """Per-level 1x1 convs predicting, per anchor, box (4), objectness (1) and class scores (nc)."""

    task = "det"

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], channels: Sequence[int],
                 strides: Sequence[int]):
        if len(anchors) != len(channels):
            raise ValueError(f"Detect needs one anchor set per input level: {len(anchors)} anchor sets, "
                             f"{len(channels)} inputs")
        super().__init__(nc + 5, len(anchors[0]) // 2, channels, strides)  # per anchor: box 4, objectness, classes
        self.nc = nc
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2)
        area = pixels.prod(-1).mean(-1)  # stock check: anchors must grow with stride
        if (area[-1] - area[0]).sign() * (self.stride[-1] - self.stride[0]).sign() < 0:
            pixels = pixels.flip(0)
        self.register_buffer("anchors", pixels / self.stride.view(-1, 1, 1))  # grid units, as stock stores them

    @classmethod
    def from_row(cls, row: Row) -> tuple[Detect, Shape | None]:
        if len(row.args) < 2:
            raise row.error(f"Detect needs [nc, anchors], got {row.args}")
        nc, anchors = row.args[0], row.args[1]
        if not isinstance(nc, int) or nc < 1:
            raise row.error(f"Detect: nc must be a positive int, got {nc!r}")
        if isinstance(anchors, int):  # a count per level: placeholders until anchors are computed from data
            anchors = [list(range(anchors * 2))] * len(row.inputs)
        if len(anchors) != len(row.inputs):
            raise row.error(f"Detect has {len(row.inputs)} inputs {row.sources} but {len(anchors)} anchor sets")
        head = cls(nc, anchors, [s.channels for s in row.inputs], [s.stride for s in row.inputs])
        head.init_biases()
        return head, None

    @torch.no_grad()
    def init_biases(self, class_frequency: torch.Tensor | None = None) -> None:
        """Stock prior: ~8 objects per 640x640 image per level, and class probability ~0.6/nc."""
        for conv, s in zip(self.m, self.stride.tolist()):
            b = conv.bias.view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            if class_frequency is None:
                b[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))
            else:
                b[:, 5:5 + self.nc] += torch.log(class_frequency / class_frequency.sum())

    def decode(self, level: int, p: torch.Tensor) -> torch.Tensor:
        """Raw map (bs, na, ny, nx, no) -> boxes xywh in input pixels, objectness and class probabilities."""
        cells = self.cells(level, p)
        anchor_px = (self.anchors[level] * self.stride[level]).view(1, self.na, 1, 1, 2).to(p.dtype)
        xy, wh, conf = p.sigmoid().split((2, 2, self.nc + 1), -1)
        xy = (xy * 2 - 0.5 + cells) * self.stride[level]
        wh = (wh * 2) ** 2 * anchor_px
        return torch.cat((xy, wh, conf), -1)
