"""Stock's ``--quad`` training batches: each group of 4 samples becomes one image at twice the size.

With probability 0.5 the group's first image is upscaled 2x (bilinear) and the other three are dropped;
otherwise the four are tiled 2 x 2 (first top-left, second below it, third right of it, fourth bottom-right,
as stock's ``collate_fn4``). A batch of B images becomes B / 4 images of 2 x imgsz, so the model sees large
images at the cost of small ones (stock's use: train at a larger size for about the price of a smaller one).
Every per-instance field goes with its image: boxes and keypoints (normalised) halve and shift to their tile,
masks are placed in their tile or upscaled; other columns are carried as they are. Samples left over from a
batch that is not a multiple of 4 (an epoch's last batch) are each upscaled, where stock drops them.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .dataset import collate

# (down, right) tile of each sample of a group, in stock's order
TILES = ((0, 0), (1, 0), (0, 1), (1, 1))
LOSS_SCALE = 4  # a quad batch holds a quarter of the images; the loss (mean x images) is scaled back, as stock


def quad_collate(samples: list[dict[str, Any]], place: Callable | None = None) -> dict[str, Any]:
    """:func:`.dataset.collate` of the samples merged in groups of 4 (see the module docstring)."""
    merged = []
    full = len(samples) // 4 * 4
    for start in range(0, full, 4):
        group = samples[start:start + 4]
        merged.append(upscaled(group[0]) if random.random() < 0.5 else tiled(group))
    merged += [upscaled(s) for s in samples[full:]]
    return collate(merged, place=place)


def upscaled(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample at twice its size: the image bilinear (cast back as stock casts it), masks repeated 2 x 2;
    normalised boxes and keypoints are unchanged."""
    out = dict(sample)
    img = sample["img"]
    out["img"] = F.interpolate(img[None].float(), scale_factor=2.0, mode="bilinear", align_corners=False)[0].to(
        img.dtype)
    if "masks" in sample:
        out["masks"] = sample["masks"].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return out


def tiled(group: list[dict[str, Any]]) -> dict[str, Any]:
    """Four samples of one shape as one 2 x 2 image; each instance moved into its sample's tile."""
    first = group[0]
    c, h, w = first["img"].shape
    shapes = {tuple(s["img"].shape) for s in group}
    if len(shapes) != 1:
        raise ValueError(f"--quad tiles four images of one shape, got {sorted(shapes)}")
    out = dict(first)
    img = first["img"].new_empty((c, 2 * h, 2 * w))
    for s, (down, right) in zip(group, TILES):
        img[:, down * h:(down + 1) * h, right * w:(right + 1) * w] = s["img"]
    out["img"] = img
    out["bboxes"] = torch.cat([_moved(s["bboxes"], down, right, size=True) for s, (down, right) in zip(group, TILES)])
    if "keypoints" in first:
        out["keypoints"] = torch.cat([_moved_points(s["keypoints"], down, right)
                                      for s, (down, right) in zip(group, TILES)])
    if "masks" in first:
        mh, mw = first["masks"].shape[-2:]
        parts = []
        for s, (down, right) in zip(group, TILES):
            canvas = s["masks"].new_zeros((len(s["masks"]), 2 * mh, 2 * mw))
            canvas[:, down * mh:(down + 1) * mh, right * mw:(right + 1) * mw] = s["masks"]
            parts.append(canvas)
        out["masks"] = torch.cat(parts)
    for key in ("cls", "has_mask", *first.get("instance_fields", ())):
        out[key] = torch.cat([s[key] for s in group])
    return out


def _moved(boxes: torch.Tensor, down: int, right: int, size: bool) -> torch.Tensor:
    """Normalised x, y (and w, h when ``size``) into the tile (down, right) of a 2 x 2 image."""
    boxes = boxes.clone()
    boxes[:, 0] = (boxes[:, 0] + right) / 2
    boxes[:, 1] = (boxes[:, 1] + down) / 2
    if size:
        boxes[:, 2:4] /= 2
    return boxes


def _moved_points(points: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """Keypoints (n, K, 2 or 3) moved as box centres; unlabelled ones (visibility 0) keep their placeholder."""
    moved = points.clone()
    labelled = points[..., 2] > 0 if points.shape[-1] > 2 else torch.ones(points.shape[:-1], dtype=torch.bool)
    moved[..., 0] = torch.where(labelled, (points[..., 0] + right) / 2, points[..., 0])
    moved[..., 1] = torch.where(labelled, (points[..., 1] + down) / 2, points[..., 1])
    return moved
