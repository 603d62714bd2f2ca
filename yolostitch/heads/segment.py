"""Instance-segmentation branch, as YOLOv5-seg: mask prototypes at stride 4 plus per-anchor coefficients.

An instance's mask is ``sigmoid(coefficients @ prototypes)`` cropped to its box. The coefficients are
predicted per anchor on the detection levels, so they ride with the detection of the same anchor through
the shared assignment (training) and the one NMS (inference). Unlike stock's ``Segment`` (a Detect that
also emits coefficients), this branch is its own YAML row, so it can be attached to any detector::

    [[17, 20, 23], 1, Segment, [anchors, 32, 256]]  # masks: 32 prototypes, 256 hidden channels (x width)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from ..models.registry import Row, register_module
from ..models.shape import Shape
from .outputs import MaskMaps, MaskRows
from .per_anchor import PerAnchorHead, anchors_per_level


class Proto(nn.Module):
    """Stock YOLOv5's prototype net: 3x3 conv, nearest 2x upsampling, 3x3 conv, 1x1 conv to ``nm`` maps."""

    def __init__(self, c1: int, hidden: int = 256, nm: int = 32):
        super().__init__()
        self.cv1 = Conv(c1, hidden, 3)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.cv2 = Conv(hidden, hidden, 3)
        self.cv3 = Conv(hidden, nm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


@register_module()
class Segment(PerAnchorHead):
    """Training: :class:`MaskMaps` (coefficient maps [(bs, na, ny, nx, nm)], prototypes (bs, nm, H/4, W/4)).
    Inference: :class:`MaskRows` (coefficients (bs, N, nm) in the detection rows' order, prototypes)."""

    task = "seg"

    def __init__(self, na: int, nm: int, hidden: int, channels: Sequence[int], strides: Sequence[int]):
        super().__init__(nm, na, channels, strides)
        self.nm = nm
        self.proto = Proto(channels[0], hidden, nm)
        self.proto_stride = strides[0] / 2

    @classmethod
    def from_row(cls, row: Row) -> tuple[Segment, Shape | None]:
        if not row.args:
            raise row.error("Segment needs [anchors, nm=32, hidden=256]")
        na = anchors_per_level(row, row.args[0])
        nm = row.args[1] if len(row.args) > 1 else 32
        hidden = row.width(row.args[2] if len(row.args) > 2 else 256)  # stock scales it by width_multiple
        if not isinstance(nm, int) or nm < 1:
            raise row.error(f"Segment: the number of prototypes must be a positive int, got {nm!r}")
        return cls(na, nm, hidden, [s.channels for s in row.inputs], [s.stride for s in row.inputs]), None

    def forward(self, features: list[torch.Tensor]) -> Any:
        protos = self.proto(features[0])
        maps = self.raw_maps(features)
        if self.training:
            return MaskMaps(maps, protos)
        return MaskRows(self.flatten(maps), protos)
