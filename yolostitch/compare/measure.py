"""Our row's inference for the latency measurement (:mod:`yolostitch.latency` times it, as it times stock's);
parameters and GFLOPs come from ``models.summary``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np


def our_detector(weights: str | Path, imgsz: int, features: str | Path = "", amp: str = "auto") -> Callable:
    """detect.py's inference on one decoded image (letterbox, Conv+BN-fused forward, NMS at conf 0.25 / IoU 0.45,
    masks and keypoints back on the image), on the CPU; feature models read the image's maps from ``features``;
    ``amp`` as detect.py's ``--amp`` (auto: bf16 on CPUs with native bf16)."""
    from ..engine.detector import Detector

    detector = Detector(weights, imgsz=imgsz, device="cpu", features=features, amp=amp)

    def detect(image: np.ndarray, path: str | None = None) -> dict[str, Any]:
        return detector(image, im_file=path)

    return detect
