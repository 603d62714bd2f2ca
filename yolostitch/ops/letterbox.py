"""The letterbox: resize an image keeping its aspect ratio, then pad it (grey, centred) to a target shape.

The one place its size, gain and pad rounding are written. Detect's inference, the data pipeline's validation,
rect-batch and feature-cache letterbox (``data.letterbox.LetterboxLabels``) and the mask region that cuts the
padding back off (``engine.predict.image_region``) all take them from here. The arithmetic is stock YOLOv5's (and
ultralytics' ``LetterBox``, which a test compares against), so validation figures stay stock's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

PAD_VALUE = 114  # the letterbox grey (0..255)


@dataclass(frozen=True)
class LetterboxPlan:
    """How one image is letterboxed: resized by ``gain`` to ``resized`` (h, w), then padded by ``pad`` (x, y) on
    each side; ``target`` is the (h, w) shape asked for (the padded shape unless ``auto`` trimmed the padding)."""

    gain: float
    resized: tuple[int, int]
    pad: tuple[float, float]  # half-paddings, floats: an odd total puts its extra pixel bottom/right
    target: tuple[int, int]

    @property
    def ratio_pad(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((gain, gain), (pad_x, pad_y))``, the form ``scale_boxes`` and ``unletterbox_*`` take to map back."""
        return (self.gain, self.gain), self.pad

    @property
    def edges(self) -> tuple[int, int, int, int]:
        """Whole-pixel (top, bottom, left, right) padding."""
        return pad_edges(*self.pad)

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the padded image."""
        top, bottom, left, right = self.edges
        return self.resized[0] + top + bottom, self.resized[1] + left + right


def pad_edges(pad_x: float, pad_y: float) -> tuple[int, int, int, int]:
    """Whole-pixel (top, bottom, left, right) padding of a letterbox whose half-paddings are ``pad_x``, ``pad_y``:
    an odd total puts the extra pixel at the bottom/right (stock's rounding)."""
    return round(pad_y - 0.1), round(pad_y + 0.1), round(pad_x - 0.1), round(pad_x + 0.1)


def plan_letterbox(shape: Sequence[int], new_shape: int | Sequence[int], stride: int = 32, auto: bool = False,
                   scaleup: bool = True) -> LetterboxPlan:
    """The letterbox taking an image of ``shape`` (h, w) to ``new_shape`` (an int for a square, or (h, w)).

    The longer side (relative to the target) fills the target; ``scaleup=False`` never enlarges (stock
    validation). ``auto`` keeps only the padding beyond a multiple of ``stride`` (stock detect.py's rectangular
    inference: with a stride-multiple target, the padded image is the smallest stride multiple holding it).
    Each resized side keeps at least one pixel.
    """
    h0, w0 = int(shape[0]), int(shape[1])
    target = (new_shape, new_shape) if isinstance(new_shape, int) else (int(new_shape[0]), int(new_shape[1]))
    gain = min(target[0] / h0, target[1] / w0)
    if not scaleup:
        gain = min(gain, 1.0)
    w, h = max(round(w0 * gain), 1), max(round(h0 * gain), 1)
    dw, dh = target[1] - w, target[0] - h
    if auto:
        dw, dh = dw % stride, dh % stride
    return LetterboxPlan(gain, (h, w), (dw / 2, dh / 2), target)


def letterbox(image: np.ndarray, new_shape: int | Sequence[int], stride: int = 32, auto: bool = False,
              scaleup: bool = True) -> tuple[np.ndarray, LetterboxPlan]:
    """``image`` (h, w, 3) resized (bilinear) and padded with :data:`PAD_VALUE` as :func:`plan_letterbox` plans it;
    returns the new image and the plan."""
    plan = plan_letterbox(image.shape[:2], new_shape, stride, auto, scaleup)
    h, w = plan.resized
    if (h, w) != image.shape[:2]:
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = plan.edges
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, plan
