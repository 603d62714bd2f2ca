"""The network's image layout from OpenCV's: BGR height x width x channel -> RGB channel x height x width.

numpy's strided copy of the reversed, transposed view is the slow way (~0.35 ms for 640 x 640); OpenCV splits
the interleaved channels with SIMD and flips planes as fast, so the same array costs half as much. Flipped
views (what ``RandomFlip`` returns) are split from their unflipped base and each plane is flipped back; crops
(rows padded, as the affine's resize leaves them) are split in place.
"""

from __future__ import annotations

import cv2
import numpy as np

_FLIP_CODE = {(False, True): 1, (True, False): 0, (True, True): -1}  # (rows reversed, columns reversed)


def rgb_chw(img: np.ndarray) -> np.ndarray:
    """A new C-contiguous (3, H, W) RGB array of the (H, W, 3) BGR image ``img`` (any view of one)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))
    reversed_axes = (img.strides[0] < 0, img.strides[1] < 0)
    flip = _FLIP_CODE.get(reversed_axes)
    base = img[::-1 if reversed_axes[0] else 1, ::-1 if reversed_axes[1] else 1]
    if base.strides[2] != base.itemsize or base.strides[1] != 3 * base.itemsize:  # transposed or strided columns:
        # numpy's copy handles any strides (OpenCV needs each row's pixels packed; row padding, as in a crop, is fine)
        return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))
    blue, green, red = cv2.split(base)
    if flip is None:
        return np.stack([red, green, blue])
    out = np.empty((3, *img.shape[:2]), img.dtype)
    for plane, channel in zip(out, (red, green, blue)):
        cv2.flip(channel, flip, dst=plane)
    return out
