"""``detect.py --save-crop``, as stock's ``save_one_box``: each detection's box, its width and height grown by 2 %
and 10 px, cut from the original image and saved as ``crops/<class>/<image>.jpg`` (JPEG quality 95, no chroma
subsampling); a second crop of the same class from the same image is ``<image>2.jpg``, and so on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..tasks import CLASS_FIELD

GAIN, PAD = 1.02, 10  # stock's defaults


def crop_box(image: np.ndarray, box: Sequence[float], gain: float = GAIN, pad: float = PAD) -> np.ndarray:
    """The region of ``image`` (h, w, c) under xyxy ``box``, grown as stock grows it, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * gain + pad, (y2 - y1) * gain + pad
    grown = np.trunc([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])  # stock truncates, then clips
    height, width = image.shape[:2]
    left, right = np.clip(grown[[0, 2]], 0, width).astype(int)
    top, bottom = np.clip(grown[[1, 3]], 0, height).astype(int)
    return image[top:bottom, left:right]


def _free_name(folder: Path, stem: str) -> Path:
    path, n = folder / f"{stem}.jpg", 2
    while path.exists():
        path, n = folder / f"{stem}{n}.jpg", n + 1
    return path


def save_crops(image: np.ndarray, result: dict[str, Any], names: dict[int, str], folder: Path, stem: str,
               class_field: str = CLASS_FIELD) -> list[Path]:
    """Every detection of ``result`` cut from BGR ``image`` into ``folder/<class name>/``; the files written."""
    written = []
    for box, c in zip(np.asarray(result["boxes"]).reshape(-1, 4), np.asarray(result[class_field]).reshape(-1)):
        crop = crop_box(image, box)
        if not crop.size:
            continue
        target = folder / names.get(int(c), str(int(c)))
        target.mkdir(parents=True, exist_ok=True)
        path = _free_name(target, stem)
        Image.fromarray(np.ascontiguousarray(crop[..., ::-1])).save(path, quality=95, subsampling=0)
        written.append(path)
    return written
