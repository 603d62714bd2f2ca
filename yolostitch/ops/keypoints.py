"""Per-keypoint OKS sigmas: the scale of each keypoint's error, shared by the keypoint loss and pose mAP."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError

COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
                        0.89, 0.89]) / 10.0  # the COCO person keypoints' per-keypoint sigmas


def keypoint_sigmas(k: int, sigmas: Sequence[float] | None = None) -> np.ndarray:
    """Per-keypoint OKS sigmas: given ones, COCO's for 17 keypoints, else 1/K each (ultralytics' convention)."""
    if sigmas is not None:
        if len(sigmas) != k:
            raise DataError(f"kpt_sigmas has {len(sigmas)} values but there are {k} keypoints")
        return np.asarray(sigmas, dtype=np.float64)
    return COCO_SIGMAS.copy() if k == 17 else np.full(k, 1.0 / k)
