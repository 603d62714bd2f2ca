"""AutoAnchor, as stock YOLOv5 runs it before training: check how well the Detect anchors fit the training boxes
and, when they fit poorly, replace them with anchors fitted to the data.

Fit is stock's: a box and an anchor match when neither side ratio exceeds ``anchor_t`` (the assignment's own
rule), so the *best possible recall* (BPR) is the share of training boxes that at least one anchor can match,
and *anchors/target* the mean number that can. Boxes are measured at training size (the long image side at
``imgsz``) with stock's random 0.9-1.1 scale jitter. Below a BPR of 0.98 new anchors are fitted (k-means on
the boxes' width and height, whitened, then 1000 generations of random mutation keeping the fitter set) and kept
only if their BPR is higher; they go to Detect smallest first, P3 to P5. A model YAML may give ``anchors: 3``
(a count per level, as stock's ``yolov5-p2.yaml``): its placeholder anchors fit nothing, so they are always
fitted here. ``--noautoanchor`` keeps the YAML's anchors.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

RECOMPUTE_BELOW = 0.98  # stock's BPR threshold
GENERATIONS = 1000
MIN_SIDE = 2.0  # px: boxes with both sides smaller are left out of the fit (stock)


def label_sizes(labels: Sequence[Any], imgsz: int, rng: Any) -> np.ndarray:
    """(n, 2) width and height in pixels of every training box at training size, each image's boxes scaled by
    one draw of ``rng.uniform(0.9, 1.1)`` (stock's augment jitter); ``labels`` have ``shape`` (h, w) and
    normalised xywh ``bboxes``."""
    shapes = np.array([[lab.shape[1], lab.shape[0]] for lab in labels], dtype=np.float64).reshape(-1, 2)
    if not len(shapes):
        return np.zeros((0, 2))
    shapes = imgsz * shapes / shapes.max(1, keepdims=True)
    jitter = rng.uniform(0.9, 1.1, size=(len(shapes), 1))
    sizes = [np.asarray(lab.bboxes, dtype=np.float64).reshape(-1, 4)[:, 2:4] * s
             for lab, s in zip(labels, shapes * jitter)]
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def side_ratio_fit(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(n, k): for each box and anchor, the worse of the two side ratios taken <= 1 (1 = same size)."""
    r = wh[:, None] / anchors[None]
    return torch.min(r, 1 / r).min(2).values


def anchor_fit(wh: np.ndarray, anchors: np.ndarray | torch.Tensor, anchor_t: float) -> tuple[float, float]:
    """(best possible recall, anchors per target) of ``anchors`` (..., 2) px for boxes ``wh`` (n, 2) px."""
    x = side_ratio_fit(torch.as_tensor(wh, dtype=torch.float32),
                       torch.as_tensor(anchors, dtype=torch.float32).reshape(-1, 2))
    if not len(x):
        return 1.0, 0.0
    bpr = (x.max(1).values > 1 / anchor_t).float().mean()
    aat = (x > 1 / anchor_t).float().sum(1).mean()
    return float(bpr), float(aat)


def _kmeans(points: np.ndarray, n: int, iterations: int = 30) -> np.ndarray:
    """Lloyd's k-means from ``n`` points spread over the area order (deterministic); (n, 2) centres."""
    order = np.argsort(points.prod(1))
    centres = points[order[np.linspace(0, len(points) - 1, n).round().astype(int)]].copy()
    for _ in range(iterations):
        nearest = ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(n):
            if (nearest == j).any():
                centres[j] = points[nearest == j].mean(0)
    return centres


def fit_anchors(wh: np.ndarray, n: int, anchor_t: float, rng: np.random.Generator,
                generations: int = GENERATIONS) -> np.ndarray:
    """(n, 2) anchors in pixels, smallest area first, fitted to boxes ``wh`` (n_boxes, 2) px."""
    points = wh[(wh >= MIN_SIDE).any(1)].astype(np.float64)
    if len(points) < 1:
        raise ValueError("no training box of 2 pixels or more to fit anchors to")
    scale = points.std(0)
    scale[scale == 0] = 1.0
    k = _kmeans(points / scale, n) * scale
    fit_points = torch.as_tensor(points, dtype=torch.float32)

    def fitness(anchors: np.ndarray) -> float:  # mean best fit, counting only boxes some anchor can match
        best = side_ratio_fit(fit_points, torch.as_tensor(anchors, dtype=torch.float32)).max(1).values
        return float((best * (best > 1 / anchor_t)).mean())

    score = fitness(k)
    for _ in range(generations):  # mutate about 90% of the values by a random few percent; keep improvements
        change = np.ones_like(k)
        while (change == 1).all():
            change = ((rng.random(k.shape) < 0.9) * rng.random() * rng.standard_normal(k.shape) * 0.1 + 1)
            change = change.clip(0.3, 3.0)
        candidate = (k * change).clip(min=MIN_SIDE)
        candidate_score = fitness(candidate)
        if candidate_score > score:
            k, score = candidate, candidate_score
    return k[np.argsort(k.prod(1))]


@torch.no_grad()
def check_anchors(head: nn.Module, labels: Sequence[Any], imgsz: int, anchor_t: float, seed: int = 0) -> str:
    """Report how ``head``'s anchors fit the training boxes and refit them in place below a BPR of 0.98;
    returns the line it logged (stock's wording)."""
    rng = np.random.default_rng(seed)
    wh = label_sizes(labels, imgsz, rng)
    stride = head.stride.to(head.anchors.device).view(-1, 1, 1)
    bpr, aat = anchor_fit(wh, (head.anchors * stride).cpu(), anchor_t)
    line = f"AutoAnchor: {aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr > RECOMPUTE_BELOW or not len(wh):
        line += "Current anchors are a good fit to the dataset"
    else:
        line += _refit(head, wh, bpr, anchor_t, rng)
    logger.info(line)
    return line


def _refit(head: nn.Module, wh: np.ndarray, bpr: float, anchor_t: float, rng: np.random.Generator) -> str:
    """Fit anchors to ``wh`` and put them in ``head`` if they match more boxes than its own (``bpr``); what
    happened, for the report."""
    small = int((wh < 3.0).any(1).sum())
    if small:
        logger.warning(f"AutoAnchor: {small} of {len(wh)} training boxes are under 3 pixels wide or high")
    try:
        fitted = fit_anchors(wh, head.anchors.shape[0] * head.anchors.shape[1], anchor_t, rng)
    except ValueError as e:  # nothing to fit to: train with the anchors as they are
        return f"Anchors are a poor fit, but {e}: kept"
    new_bpr, new_aat = anchor_fit(wh, fitted, anchor_t)
    if new_bpr <= bpr:
        return f"Anchors are a poor fit, but fitted ones were no better (BPR {new_bpr:.3f}): kept"
    if head.stride[-1] < head.stride[0]:  # anchors grow with stride
        fitted = fitted[::-1].copy()
    stride = head.stride.to(head.anchors.device).view(-1, 1, 1)
    anchors_px = torch.as_tensor(fitted, dtype=head.anchors.dtype, device=stride.device).view_as(head.anchors)
    head.anchors[:] = anchors_px / stride
    pixels = ", ".join(f"{w:.0f},{h:.0f}" for w, h in fitted)
    return (f"Anchors were a poor fit; new anchors {pixels} give {new_aat:.2f} anchors/target and BPR {new_bpr:.3f} "
            "(saved with the weights; put them in the model YAML to skip this)")
