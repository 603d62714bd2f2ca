"""YOLOv5 detection loss terms (box CIoU, objectness, classification) from raw maps and assignments.

The terms are returned ungained; ``detection_gains`` gives the weights stock's train.py derives from the
hyperparameters, which ``ComputeLoss`` applies.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .assign import LevelAssignment

FOCAL_ALPHA = 0.25  # stock FocalLoss default


def objectness_balance(nl: int) -> list[float]:
    """Per-level objectness weights, stock's table: finer levels see more negatives, so weigh more."""
    return [4.0, 1.0, 0.4] if nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][:nl]


def detection_gains(hyp: dict[str, Any], nl: int, nc: int, imgsz: int) -> dict[str, float]:
    """Loss gains from ``hyp``'s box/obj/cls, rescaled as stock train.py does for the model at hand.

    The hyp values are tuned for 3 levels, 80 classes and 640 px: the box gain scales with 3/nl, the
    class gain also with nc/80, the objectness gain with the number of cells ((imgsz/640)**2).
    """
    return {"box": hyp["box"] * (3 / nl),
            "obj": hyp["obj"] * ((imgsz / 640) ** 2 * 3 / nl),
            "cls": hyp["cls"] * (nc / 80 * 3 / nl)}


def smooth_labels(eps: float) -> tuple[float, float]:
    """BCE targets (positive, negative) with label smoothing ``eps`` (stock smooth_BCE)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def ciou(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of paired boxes (m, 4) xywh -> (m,). The aspect-ratio weight is not differentiated."""
    pred_xy, pred_wh = pred[:, :2], pred[:, 2:4]
    true_xy, true_wh = target[:, :2], target[:, 2:4]
    pred_lo, pred_hi = pred_xy - pred_wh / 2, pred_xy + pred_wh / 2
    true_lo, true_hi = true_xy - true_wh / 2, true_xy + true_wh / 2

    overlap = (torch.minimum(pred_hi, true_hi) - torch.maximum(pred_lo, true_lo)).clamp(0)
    inter = overlap[:, 0] * overlap[:, 1]
    union = pred_wh[:, 0] * pred_wh[:, 1] + true_wh[:, 0] * true_wh[:, 1] - inter + eps
    iou = inter / union

    enclosing = torch.maximum(pred_hi, true_hi) - torch.minimum(pred_lo, true_lo)
    diagonal2 = enclosing.pow(2).sum(1) + eps
    centre_dist2 = (true_xy - pred_xy).pow(2).sum(1)
    aspect = (4 / math.pi ** 2) * (torch.atan(true_wh[:, 0] / true_wh[:, 1])
                                   - torch.atan(pred_wh[:, 0] / pred_wh[:, 1])).pow(2)
    with torch.no_grad():
        aspect_weight = aspect / (aspect - iou + (1 + eps))
    return iou - (centre_dist2 / diagonal2 + aspect * aspect_weight)


def bce(logits: Tensor, target: Tensor, pos_weight: float, gamma: float = 0.0) -> Tensor:
    """Mean BCE-with-logits; with ``gamma > 0`` each element gets stock's focal factor (alpha 0.25)."""
    weight = torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight,
                                              reduction="none" if gamma > 0 else "mean")
    if gamma <= 0:
        return loss
    prob = logits.sigmoid()
    p_true = target * prob + (1 - target) * (1 - prob)
    alpha = target * FOCAL_ALPHA + (1 - target) * (1 - FOCAL_ALPHA)
    return (loss * alpha * (1.0 - p_true) ** gamma).mean()


def detection_terms(maps: Sequence[Tensor], assignments: Sequence[LevelAssignment], hyp: dict[str, Any],
                    nc: int | None = None, iou_ratio: float = 1.0) -> dict[str, Tensor]:
    """Ungained ``box``, ``obj`` and ``cls`` losses (0-dim) summed over levels, as stock computes them.

    ``maps`` are raw head outputs (bs, na, ny, nx, 5 + nc [+ extra]); ``iou_ratio`` is stock's ``gr``,
    the share of the objectness target taken from the (detached) CIoU rather than 1. The class term is
    zero for single-class models (stock).
    """
    nc = maps[0].shape[-1] - 5 if nc is None else nc
    balance = objectness_balance(len(maps))
    positive, negative = smooth_labels(hyp.get("label_smoothing", 0.0))
    gamma = hyp.get("fl_gamma", 0.0)
    zero = maps[0].new_zeros(())
    box, obj, cls = zero, zero, zero
    for level, (p, a) in enumerate(zip(maps, assignments)):
        obj_target = torch.zeros(p.shape[:4], dtype=p.dtype, device=p.device)
        if len(a):
            pred = p[a.batch, a.anchor, a.gj, a.gi]
            pred_box = torch.cat((pred[:, :2].sigmoid() * 2 - 0.5, (pred[:, 2:4].sigmoid() * 2) ** 2 * a.anchor_wh), 1)
            overlap = ciou(pred_box, a.box)
            box = box + (1.0 - overlap).mean()

            quality = overlap.detach().clamp(0).to(p.dtype)
            if iou_ratio < 1:
                quality = (1.0 - iou_ratio) + iou_ratio * quality
            obj_target[a.batch, a.anchor, a.gj, a.gi] = quality  # duplicates: the last assignment wins

            if nc > 1:
                cls_target = torch.full_like(pred[:, 5:5 + nc], negative)
                cls_target[torch.arange(len(a), device=p.device), a.cls] = positive
                cls = cls + bce(pred[:, 5:5 + nc], cls_target, hyp["cls_pw"], gamma)
        obj = obj + bce(p[..., 4], obj_target, hyp["obj_pw"], gamma) * balance[level]
    return {"box": box, "obj": obj, "cls": cls}
