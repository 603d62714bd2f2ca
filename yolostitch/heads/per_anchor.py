"""What every per-anchor branch shares: one 1x1 conv per level, maps laid out (bs, na, ny, nx, outputs),
and the grid of cell corners used to decode them.

Detection, mask coefficients and keypoints are all predicted per anchor on the same levels, so one target
assignment (``losses.assign``) and one NMS serve them all: row ``r`` of every branch's flattened output
belongs to the same anchor at the same cell.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..models.registry import Row
from .outputs import AnchorRows


class PerAnchorHead(nn.Module):
    """Base of Detect, Segment and Keypoints: ``na`` anchors on each of ``len(channels)`` levels."""

    def __init__(self, outputs_per_anchor: int, na: int, channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"{len(channels)} input levels but {len(strides)} strides")
        self.nl, self.na, self.no = len(channels), na, outputs_per_anchor
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
        self._cells: list[torch.Tensor] = []

    export = False  # when True, inference keeps no raw maps (exported graphs output the decoded rows only)

    def forward(self, features: list[torch.Tensor]) -> Any:
        """Training: raw maps [(bs, na, ny, nx, no)]. Inference: :class:`AnchorRows` (decoded (bs, N, no), maps)."""
        maps = self.raw_maps(features)
        if self.training:
            return maps
        decoded = self.flatten([self.decode(i, p) for i, p in enumerate(maps)])
        return AnchorRows(decoded, [] if self.export else maps)

    def decode(self, level: int, p: torch.Tensor) -> torch.Tensor:
        """A level's raw map -> its decoded values (subclasses: boxes, keypoints); identity here."""
        return p

    def raw_maps(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One map per level, (bs, na, ny, nx, no), fp32 even under autocast: decoding and the losses need
        fp32 (a bf16 box centre near 600 px is off by up to 2 px); an fp32 map is kept as it is."""
        maps = []
        for conv, x in zip(self.m, features):
            p = conv(x)
            bs, _, ny, nx = p.shape
            p = p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            maps.append(p if p.dtype == torch.float32 else p.float())
        return maps

    def cells(self, level: int, p: torch.Tensor) -> torch.Tensor:
        """(1, 1, ny, nx, 2) x, y of each cell's corner in grid units, cached per level and shape."""
        ny, nx = p.shape[2:4]
        if len(self._cells) != self.nl:
            self._cells = [torch.empty(0)] * self.nl
        cells = self._cells[level]
        if cells.shape[2:4] != (ny, nx) or cells.device != p.device or cells.dtype != p.dtype or torch.jit.is_tracing():
            # counted from a ones_like of the map, not torch.arange(device=...): a traced graph would record the
            # export device as a constant, and a TorchScript file exported on the CPU would then fail on a GPU
            ones = torch.ones_like(p[0, 0, :, :, 0])
            cells = torch.stack((ones.cumsum(1) - 1, ones.cumsum(0) - 1), -1).view(1, 1, ny, nx, 2)
            self._cells[level] = cells
        return cells

    @staticmethod
    def flatten(maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level maps (bs, na, ny, nx, k) -> (bs, N, k), rows in the order every branch uses."""
        return torch.cat([p.reshape(p.shape[0], -1, p.shape[-1]) for p in maps], 1)


def anchors_per_level(row: Row, anchors: Any) -> int:
    """Anchors per location from a row's ``anchors`` argument (the config's anchor lists, or a count)."""
    if isinstance(anchors, int) and anchors > 0:
        return anchors
    if isinstance(anchors, (list, tuple)) and anchors and all(isinstance(a, (list, tuple)) for a in anchors):
        if len(anchors) != len(row.inputs):
            raise row.error(f"{row.module} has {len(row.inputs)} inputs {row.sources} but {len(anchors)} anchor sets")
        return len(anchors[0]) // 2
    raise row.error(f"{row.module}: 'anchors' must be the config's anchors or a count per level, got {anchors!r}")
