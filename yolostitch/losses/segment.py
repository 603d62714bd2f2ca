"""Mask loss of the segmentation branch (YOLOv5-seg's): per assigned anchor, BCE between
``coefficients @ prototypes`` and the instance's mask, counted only inside the instance's box and
normalised by the box area, so small and large instances weigh the same."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import box_crop, resize_masks
from .assign import LevelAssignment


def mask_term(coefficient_maps: Sequence[Tensor], protos: Tensor, assignments: Sequence[LevelAssignment],
              masks: Tensor, has_mask: Tensor, boxes: Tensor) -> Tensor:
    """Mask loss summed over levels (0-dim), ungained; the mean over assignments whose instance has a mask.

    ``masks`` (n, h, w) and ``has_mask`` (n,) are per target row (``assignment.instance`` indexes them);
    ``boxes`` (n, 4) are the targets' normalised xywh.
    """
    bs, nm, ph, pw = protos.shape
    targets = resize_masks(masks.to(protos.device), (ph, pw)).float()
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
    per_image = protos.view(bs, nm, -1).unbind(0)  # one backward op for all images, not one per selection
    loss = protos.new_zeros(())
    for b in batch.unique().tolist():
        mine = batch == b
        inst = instance[mine]
        logits = (coefficients[mine] @ per_image[b]).view(-1, ph, pw)
        per_pixel = F.binary_cross_entropy_with_logits(logits, targets[inst], reduction="none")
        inside = box_crop(xyxy[inst], ph, pw)
        loss = loss + ((per_pixel * inside).sum((1, 2)) / area[inst] * weight[mine]).sum()
    return loss
