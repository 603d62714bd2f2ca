"""Drawing batches: boxes, masks and keypoints on a mosaic of the batch's images (cv2 only, no fonts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

_PALETTE = np.array([(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
                     (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
                     (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
                     (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255)], np.uint8)


def colour(i: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in _PALETTE[i % len(_PALETTE)])


def draw_batch(batch: dict[str, Any], path: str | Path, names: dict[int, str] | None = None,
               max_images: int = 16) -> Path:
    """Write a grid of the batch's images with each instance's box, mask and keypoints (BGR PNG/JPEG)."""
    images = batch["img"][:max_images]
    n, _, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(n):
        tile = np.ascontiguousarray(images[i].permute(1, 2, 0).numpy()[..., ::-1])
        keep = batch["batch_idx"] == i
        _draw_instances(tile, {k: v[keep] for k, v in batch.items()
                               if torch.is_tensor(v) and k != "img" and len(v) == len(keep)}, names)
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
        cv2.rectangle(canvas, (c * w, r * h), ((c + 1) * w - 1, (r + 1) * h - 1), (255, 255, 255), 2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
    return path


def _draw_instances(tile: np.ndarray, inst: dict[str, torch.Tensor], names: dict[int, str] | None) -> None:
    h, w = tile.shape[:2]
    if "masks" in inst and len(inst["masks"]):
        for m, c, real in zip(inst["masks"], inst["cls"], inst["has_mask"]):
            if real:
                big = cv2.resize(m.numpy(), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                tile[big] = (0.5 * tile[big] + 0.5 * np.array(colour(int(c)))).astype(np.uint8)
    for j, (box, c) in enumerate(zip(inst["bboxes"], inst["cls"])):
        cx, cy, bw, bh = (box * torch.tensor([w, h, w, h])).tolist()
        p1, p2 = (round(cx - bw / 2), round(cy - bh / 2)), (round(cx + bw / 2), round(cy + bh / 2))
        cv2.rectangle(tile, p1, p2, colour(int(c)), 1, cv2.LINE_AA)
        label = (names or {}).get(int(c), str(int(c)))
        cv2.putText(tile, label, (p1[0], max(p1[1] - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour(int(c)), 1,
                    cv2.LINE_AA)
        if "keypoints" in inst:
            for k, (x, y, v) in enumerate(inst["keypoints"][j].tolist()):
                if v > 0:
                    centre = (round(x * w), round(y * h))
                    cv2.circle(tile, centre, 3, colour(k + 5), -1 if v == 2 else 1, cv2.LINE_AA)
