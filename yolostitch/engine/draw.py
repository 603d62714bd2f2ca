"""Drawing primitives shared by the batch plots and the detect drawings: palette, label tabs, text (cv2 only,
no font files)."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch

_PALETTE = np.array([(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
                     (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
                     (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
                     (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255)], np.uint8)


def colour(i: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in _PALETTE[i % len(_PALETTE)])


def rows(x: Any) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def point(p: Sequence[float]) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def text_contrast(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bg`` (BGR)."""
    b, g, r = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def label_tab(im: np.ndarray, text: str, corner: tuple[int, int], bg: tuple[int, int, int], lw: int) -> None:
    """``text`` on a filled ``bg`` tab above the box corner (inside the box when there is no room above)."""
    scale, thick = lw / 3, max(lw - 1, 1)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = corner
    above = y - th - base - 3 >= 0
    top = y - th - base - 3 if above else y
    cv2.rectangle(im, (x, top), (x + tw + 2, top + th + base + 3), bg, -1, cv2.LINE_AA)
    cv2.putText(im, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, text_contrast(bg), thick,
                cv2.LINE_AA)


def text_list(im: np.ndarray, lines: Sequence[str], lw: int) -> None:
    """Lines of text on white, one under the other, in the top-left corner."""
    scale, thick = lw / 3, max(lw - 1, 1)
    y = 0
    for text in lines:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(im, (0, y), (tw + 8, y + th + base + 6), (255, 255, 255), -1)
        cv2.putText(im, text, (4, y + th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
        y += th + base + 6


def to_numpy(x: Any) -> np.ndarray:
    return x.numpy() if torch.is_tensor(x) else np.asarray(x)
