"""Mask loss of the segmentation branch (YOLOv5-seg's): per assigned anchor, BCE between
``coefficients @ prototypes`` and the instance's mask, counted only inside the instance's box and
normalised by the box area, so small and large instances weigh the same.

Only pixels inside a box count, so for boxes much smaller than the map the loss is computed on a window around
each box instead of on the whole map (YOLOv5-seg computes every assignment's whole map and then crops): the
assignments of one instance share its window, and windows of like size are batched. The value is the same
(the BCE terms are summed in another order); on the built-in data at 320 the term's forward and backward took
a fifth of the time. Boxes that cover much of the map keep the whole-map computation.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import box_crop, resize_masks
from .assign import LevelAssignment

WINDOW_STEP = 8  # window sides are rounded up to a multiple of this, so few window shapes need batching
DENSE_SHARE = 0.5  # an instance whose window would cover this share of the map uses the whole map


def mask_term(coefficient_maps: Sequence[Tensor], protos: Tensor, assignments: Sequence[LevelAssignment],
              masks: Tensor, has_mask: Tensor, boxes: Tensor) -> Tensor:
    """Mask loss summed over levels (0-dim), ungained; the mean over assignments whose instance has a mask.

    ``masks`` (n, h, w) and ``has_mask`` (n,) are per target row (``assignment.instance`` indexes them);
    ``boxes`` (n, 4) are the targets' normalised xywh.
    """
    bs, nm, ph, pw = protos.shape
    targets = resize_masks(masks.to(protos.device), (ph, pw))
    scale = torch.tensor([pw, ph, pw, ph], device=protos.device, dtype=protos.dtype)
    xyxy = torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1).to(protos) * scale
    area = (boxes[:, 2] * boxes[:, 3]).to(protos).clamp(min=1e-6) * (ph * pw)  # box area in prototype pixels
    # all levels at once, each assignment weighted 1/(its level's count): the per-level means, summed
    coefficients, batch, instance, weight = [], [], [], []
    for p, a in zip(coefficient_maps, assignments):
        use = has_mask.to(a.instance.device)[a.instance]
        if not use.any():
            continue
        coefficients.append(p[a.batch[use], a.anchor[use], a.gj[use], a.gi[use]])
        batch.append(a.batch[use])
        instance.append(a.instance[use])
        weight.append(torch.full((int(use.sum()),), 1.0 / int(use.sum()), device=protos.device, dtype=protos.dtype))
    if not coefficients:
        return protos.sum() * 0.0  # keeps the graph (and DDP's used-parameter bookkeeping) intact
    coefficients, batch, instance, weight = (torch.cat(v) for v in (coefficients, batch, instance, weight))
    origin, side = _windows(xyxy, ph, pw)
    dense = (side * side >= DENSE_SHARE * ph * pw)[instance]
    weight = weight / area[instance]  # each assignment's BCE sum counts per box pixel
    loss = protos.new_zeros(())
    if dense.any():
        loss = loss + _whole_map(coefficients[dense], batch[dense], instance[dense], weight[dense], protos,
                                 targets, xyxy)
    if not dense.all():
        keep = ~dense
        loss = loss + _windowed(coefficients[keep], batch[keep], instance[keep], weight[keep], protos, targets,
                                xyxy, origin, side)
    return loss


def _windows(xyxy: Tensor, ph: int, pw: int) -> tuple[Tensor, Tensor]:
    """Per box: the top-left pixel (y, x) and side of a square window holding every pixel whose centre lies in
    the box, with a pixel of margin each side (which pixels count is decided exactly, as ``box_crop`` does)."""
    x0 = torch.floor(xyxy[:, 0] - 0.5).long() - 1
    y0 = torch.floor(xyxy[:, 1] - 0.5).long() - 1
    side = torch.maximum(torch.ceil(xyxy[:, 2] - 0.5).long() - x0, torch.ceil(xyxy[:, 3] - 0.5).long() - y0) + 1
    side = (torch.div(side.clamp(min=1) + WINDOW_STEP - 1, WINDOW_STEP, rounding_mode="floor") * WINDOW_STEP)
    return torch.stack((y0, x0), 1), side.clamp(max=max(ph, pw) + 2 * WINDOW_STEP)


def _whole_map(coefficients: Tensor, batch: Tensor, instance: Tensor, weight: Tensor, protos: Tensor,
               targets: Tensor, xyxy: Tensor) -> Tensor:
    """The BCE over each assignment's whole map, cropped to its box (YOLOv5-seg's way), one image at a time."""
    bs, nm, ph, pw = protos.shape
    per_image = protos.view(bs, nm, -1).unbind(0)  # one backward op for all images, not one per selection
    loss = protos.new_zeros(())
    for b in batch.unique().tolist():
        mine = batch == b
        inst = instance[mine]
        logits = (coefficients[mine] @ per_image[b]).view(-1, ph, pw)
        per_pixel = F.binary_cross_entropy_with_logits(logits, targets[inst].to(logits.dtype), reduction="none")
        inside = box_crop(xyxy[inst], ph, pw)
        loss = loss + ((per_pixel * inside).sum((1, 2)) * weight[mine]).sum()
    return loss


def _windowed(coefficients: Tensor, batch: Tensor, instance: Tensor, weight: Tensor, protos: Tensor,
              targets: Tensor, xyxy: Tensor, origin: Tensor, side: Tensor) -> Tensor:
    """The BCE on a window around each box: an instance's prototypes and mask are cut out once, its assignments'
    logits are one batched product, and instances with windows of one size go together."""
    bs, nm, ph, pw = protos.shape
    order = torch.argsort(instance, stable=True)  # assignments grouped by instance
    coefficients, batch, instance, weight = coefficients[order], batch[order], instance[order], weight[order]
    ids, counts = torch.unique_consecutive(instance, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    image = batch[starts]
    pixels = protos.permute(0, 2, 3, 1)  # (bs, ph, pw, nm): a window's pixels are rows of its prototypes
    sides = side[ids]
    # groups: one window side and one power-of-two bound on the assignment count, so padding stays under 2x
    columns = torch.pow(2, torch.ceil(torch.log2(counts.float())).long())
    keys = sides * (int(columns.max()) + 1) + columns
    loss = protos.new_zeros(())
    for key in keys.unique().tolist():
        group = torch.nonzero(keys == key).squeeze(1)
        s, inst, n = int(sides[group[0]]), ids[group], len(group)
        steps = torch.arange(s, device=protos.device)
        ys, xs = origin[inst, 0:1] + steps, origin[inst, 1:2] + steps  # (n, s) each, may leave the map
        yc, xc = ys.clamp(0, ph - 1)[:, :, None], xs.clamp(0, pw - 1)[:, None, :]
        window = pixels[image[group][:, None, None], yc, xc].reshape(n, s * s, nm)
        truth = targets[inst[:, None, None], yc, xc].reshape(n, s * s, 1).to(protos.dtype)
        box = xyxy[inst]
        in_x = (xs + 0.5 >= box[:, 0:1]) & (xs + 0.5 < box[:, 2:3]) & (xs >= 0) & (xs < pw)
        in_y = (ys + 0.5 >= box[:, 1:2]) & (ys + 0.5 < box[:, 3:4]) & (ys >= 0) & (ys < ph)
        inside = (in_y[:, :, None] & in_x[:, None, :]).reshape(n, s * s, 1)
        # each instance's assignments as columns, padded to the group's largest count (padding weighs 0)
        slot = torch.arange(int(counts[group].max()), device=protos.device)
        real = slot < counts[group][:, None]  # (n, k)
        rows = torch.where(real, starts[group][:, None] + slot, starts[group][:, None])
        logits = torch.bmm(window, coefficients[rows].transpose(1, 2))  # (n, s*s, k)
        per_pixel = F.softplus(logits) - logits * truth  # BCE with logits, the target broadcast over columns
        loss = loss + ((per_pixel * inside).sum(1) * (weight[rows] * real)).sum()
    return loss
