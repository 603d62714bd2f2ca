"""COCO results-format records (the ``predictions.json`` pycocotools' ``loadRes`` reads) for one image.

Boxes are xywh with the top-left corner, in original-image pixels; ``category_id`` is the class index unless
``category_ids`` maps it (e.g. to COCO's 91-id scheme).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence


def image_id_of(path: str | Path) -> int | str:
    """COCO image id of an image file: its stem as an int when numeric (``000000000139.jpg`` -> 139), else the stem."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _category(classes: ArrayLike, category_ids: Sequence[int] | None) -> list[int]:
    return [int(category_ids[int(c)]) if category_ids is not None else int(c) for c in _np(classes).reshape(-1)]


def _xywh(boxes_xyxy: ArrayLike) -> list[list[float]]:
    b = _np(boxes_xyxy).astype(np.float64).reshape(-1, 4)
    b[:, 2:] -= b[:, :2]
    return [[round(float(v), 3) for v in row] for row in b]


def box_records(image_id: int | str, boxes_xyxy: ArrayLike, scores: ArrayLike, classes: ArrayLike,
                category_ids: Sequence[int] | None = None) -> list[dict]:
    """One record per box: ``bbox`` [x, y, w, h] rounded to 3 decimals, ``score`` to 5."""
    return [{"image_id": image_id, "category_id": c, "bbox": b, "score": round(float(s), 5)}
            for b, s, c in zip(_xywh(boxes_xyxy), _np(scores).reshape(-1), _category(classes, category_ids))]


def encode_masks(masks: ArrayLike) -> list[dict]:
    """Compressed RLEs of binary masks (n, H, W), ``counts`` decoded to str so they serialise to JSON."""
    from pycocotools import mask as mask_utils

    m = _np(masks)
    if not len(m):
        return []
    rles = mask_utils.encode(np.asfortranarray((m != 0).transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("utf-8")
    return rles


def mask_records(image_id: int | str, masks: ArrayLike, scores: ArrayLike, classes: ArrayLike,
                 boxes_xyxy: ArrayLike | None = None, category_ids: Sequence[int] | None = None) -> list[dict]:
    """One record per mask (n, H, W) at the original image's size: ``segmentation`` as compressed RLE, and
    ``bbox`` when boxes are given (``loadRes`` otherwise derives it from the mask)."""
    recs = [{"image_id": image_id, "category_id": c, "segmentation": rle, "score": round(float(s), 5)}
            for rle, s, c in zip(encode_masks(masks), _np(scores).reshape(-1), _category(classes, category_ids))]
    if boxes_xyxy is not None:
        for r, b in zip(recs, _xywh(boxes_xyxy)):
            r["bbox"] = b
    return recs


def keypoint_records(image_id: int | str, keypoints: ArrayLike, scores: ArrayLike, classes: ArrayLike,
                     boxes_xyxy: ArrayLike, category_ids: Sequence[int] | None = None) -> list[dict]:
    """One record per object: ``keypoints`` flat [x1, y1, s1, x2, ...] from (n, K, 3) (x, y, confidence; (n, K, 2)
    gets confidence 1), and its ``bbox``. COCOeval scores only x and y."""
    k = _np(keypoints).astype(np.float64)
    if k.ndim == 3 and k.shape[-1] == 2:
        k = np.concatenate([k, np.ones_like(k[..., :1])], -1)
    flat = [[round(float(v), 3) if i % 3 < 2 else round(float(v), 5) for i, v in enumerate(row.reshape(-1))]
            for row in k]
    return [{"image_id": image_id, "category_id": c, "keypoints": kp, "bbox": b, "score": round(float(s), 5)}
            for kp, b, s, c in zip(flat, _xywh(boxes_xyxy), _np(scores).reshape(-1),
                                   _category(classes, category_ids))]
