"""Keypoint branch, as YOLO-Pose on YOLOv5: per anchor, K keypoints regressed from the cell, plus visibility.

Decoding follows YOLO-Pose: ``xy = (2 * raw - 0.5 + cell) * stride`` (no sigmoid, so a keypoint may lie
several cells away from the anchor's cell), visibility = ``sigmoid(raw)``. Keypoints are predicted for the
same anchors as the detection, so the detection assignment and NMS carry them. A fresh branch starts with every
keypoint at its cell's centre (bias 0.5, weights scaled to 1/100 of PyTorch's default): with the default
initialisation its outputs scatter 2-3 cells around the cell on pretrained features, noise the loss first has to
undo within a short fine-tune. Only the starting weights change; decoding is the same for every checkpoint::

    [[17, 20, 23], 1, Keypoints, [anchors, kpt_shape]]  # kpt_shape [K, 3]: x, y, visibility; [K, 2]: x, y
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.registry import Row, register_module
from ..models.shape import Shape
from .per_anchor import PerAnchorHead, anchors_per_level

INIT_WEIGHT_SCALE = 0.01  # fresh keypoint convs: weights at 1/100 of PyTorch's default initialisation


@register_module()
class Keypoints(PerAnchorHead):
    """Training: raw maps [(bs, na, ny, nx, K*D)]. Inference: :class:`~.outputs.AnchorRows` (decoded (bs, N, K*D), raw maps) where
    decoded holds x, y in input pixels (and visibility probability when D == 3) per keypoint."""

    task = "kpt"

    def __init__(self, na: int, kpt_shape: Sequence[int], channels: Sequence[int], strides: Sequence[int]):
        k, d = int(kpt_shape[0]), int(kpt_shape[1])
        super().__init__(k * d, na, channels, strides)
        self.kpt_shape = (k, d)
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        """Start at the cell centres (raw x, y = 0.5), visibility 0.5, nearly independent of the features."""
        k, d = self.kpt_shape
        for conv in self.m:
            conv.weight.mul_(INIT_WEIGHT_SCALE)  # scales the default init: no extra random draws
            bias = conv.bias.view(self.na, k, d)
            bias[..., :2] = 0.5  # 2 * 0.5 - 0.5 = half a cell from the corner
            bias[..., 2:] = 0.0

    @classmethod
    def from_row(cls, row: Row) -> tuple[Keypoints, Shape | None]:
        if len(row.args) < 2:
            raise row.error("Keypoints needs [anchors, kpt_shape]")
        na = anchors_per_level(row, row.args[0])
        shape = row.args[1]
        if (not isinstance(shape, (list, tuple)) or len(shape) != 2 or not all(isinstance(v, int) for v in shape)
                or shape[0] < 1 or shape[1] not in (2, 3)):
            raise row.error(f"Keypoints: kpt_shape must be [K, 2 or 3], got {shape!r}")
        return cls(na, shape, [s.channels for s in row.inputs], [s.stride for s in row.inputs]), None

    def decode(self, level: int, p: torch.Tensor) -> torch.Tensor:
        k, d = self.kpt_shape
        raw = p.view(*p.shape[:4], k, d)
        xy = (raw[..., :2] * 2 - 0.5 + self.cells(level, p).unsqueeze(-2)) * self.stride[level]
        if d == 2:
            return xy.flatten(-2)
        return torch.cat((xy, raw[..., 2:].sigmoid()), -1).flatten(-2)
