"""YOLOv5 target assignment, kept apart from the loss terms so every branch (det, seg, pose) can share it.

Each target is matched, per level, to every anchor whose width/height ratio to it is within
``anchor_t`` (both ways), and placed in its own cell plus the two neighbouring cells whose shared edge is
closest to its centre (stock's "5-offset" rule with g = 0.5; offsets -0.5 .. +0.5 keep predicted centres
reachable since the head decodes xy as ``2*sigmoid - 0.5``).

Assignments are ordered as stock orders them (offset, then anchor, then target), so sums and the
last-write-wins objectness scatter give the same numbers as stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

NEIGHBOUR_BIAS = 0.5  # stock's g: how close to a cell edge a centre must be for the neighbour to share it

# Shifts (in cells) subtracted from the centre to reach each candidate cell: own, left, up, right, down.
_OFFSETS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]) * NEIGHBOUR_BIAS


@dataclass
class LevelAssignment:
    """The (prediction, target) pairs of one level; all fields have one row per assignment."""

    batch: Tensor  # (m,) image index
    anchor: Tensor  # (m,) anchor index within the level
    gj: Tensor  # (m,) cell row
    gi: Tensor  # (m,) cell column
    box: Tensor  # (m, 4) target xywh in grid units, xy relative to the cell's corner
    anchor_wh: Tensor  # (m, 2) matched anchor in grid units
    cls: Tensor  # (m,) class index
    instance: Tensor  # (m,) row of ``targets`` this assignment came from

    def __len__(self) -> int:
        return int(self.batch.shape[0])


def targets_from_batch(batch: dict) -> Tensor:
    """The loader's per-instance fields as stock's targets (n, 6) = [image, class, cx, cy, w, h]."""
    boxes = batch["bboxes"].float()
    image = batch["batch_idx"].to(boxes.device, boxes.dtype).view(-1, 1)
    cls = batch["cls"].to(boxes.device, boxes.dtype).view(-1, 1)
    return torch.cat((image, cls, boxes.view(-1, 4)), 1)


def assign_targets(targets: Tensor, head: nn.Module, map_shapes: Sequence[Sequence[int]],
                   anchor_t: float) -> list[LevelAssignment]:
    """Assign ``targets`` (n, 6) = [image, class, cx, cy, w, h] (normalised) to ``head``'s anchors.

    ``map_shapes`` gives (ny, nx) per level; ``head.anchors`` is (nl, na, 2) in grid units.
    """
    anchors: Tensor = head.anchors
    return [_assign_level(targets, anchors[level], int(ny), int(nx), anchor_t)
            for level, (ny, nx) in enumerate(map_shapes)]


def _assign_level(targets: Tensor, anchors: Tensor, ny: int, nx: int, anchor_t: float) -> LevelAssignment:
    device, dtype = targets.device, targets.dtype
    scale = torch.tensor([nx, ny], device=device, dtype=dtype)
    centre = targets[:, 2:4] * scale  # (n, 2) grid units
    size = targets[:, 4:6] * scale

    shape_ok = _anchor_match(size, anchors, anchor_t)  # (na, n)
    cell_ok = _candidate_cells(centre, scale)  # (5, n)
    offset, anchor, instance = torch.nonzero(cell_ok[:, None, :] & shape_ok[None], as_tuple=True)

    xy = centre[instance]
    cell = (xy - _OFFSETS.to(device, dtype)[offset]).long()
    cell = torch.minimum(cell.clamp(min=0), torch.tensor([nx - 1, ny - 1], device=device))
    box = torch.cat((xy - cell, size[instance]), 1)  # relative to the clamped cell, as stock
    gi, gj = cell.unbind(1)
    return LevelAssignment(batch=targets[instance, 0].long(), anchor=anchor, gj=gj, gi=gi, box=box,
                           anchor_wh=anchors[anchor], cls=targets[instance, 1].long(), instance=instance)


def _anchor_match(size: Tensor, anchors: Tensor, anchor_t: float) -> Tensor:
    """(na, n) mask: the anchor is at most ``anchor_t`` times larger or smaller than the box on both sides."""
    ratio = size[None] / anchors[:, None]  # (na, n, 2)
    return torch.max(ratio, 1 / ratio).max(2).values < anchor_t


def _candidate_cells(centre: Tensor, scale: Tensor) -> Tensor:
    """(5, n) mask of usable cells: own cell always, a neighbour if the centre is near that edge."""
    from_far_edge = scale - centre
    near_low = (centre % 1 < NEIGHBOUR_BIAS) & (centre > 1)  # left (x) / top (y) neighbour
    near_high = (from_far_edge % 1 < NEIGHBOUR_BIAS) & (from_far_edge > 1)  # right / bottom neighbour
    own = torch.ones_like(near_low[:, 0])
    return torch.stack((own, near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1]))
