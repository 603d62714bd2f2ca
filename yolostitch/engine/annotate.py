"""Drawing a detect result (see ``engine.detector``) on the image it refers to."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..tasks import TASKS


def draw(image: np.ndarray, result: dict[str, Any], names: dict[int, str] | Sequence[str] | None = None,
         line_thickness: int | None = None, hide_labels: bool = False, hide_conf: bool = False,
         skeleton: Sequence[Sequence[int]] | None = None, kpt_threshold: float = 0.5,
         mask_alpha: float = 0.5) -> np.ndarray:
    """A copy of ``image`` (BGR, the original the result refers to) with the result drawn on it.

    Every registered task draws its fields, lowest ``draw_layer`` first: masks as translucent class-coloured
    fills, boxes with class-coloured labels, keypoints as dots (those with a visibility probability <=
    ``kpt_threshold`` left out) joined by ``skeleton`` pairs, image-level class probabilities in the top-left
    corner. Text is cv2's built-in Hershey font: no font file is loaded.
    """
    im = image.copy()
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names or {})
    h0, w0 = im.shape[:2]
    style = {"names": names, "lw": line_thickness or max(round((h0 + w0) / 2 * 0.003), 2), "hide_labels": hide_labels,
             "hide_conf": hide_conf, "skeleton": skeleton, "kpt_threshold": kpt_threshold, "mask_alpha": mask_alpha}
    for cls in sorted(TASKS, key=lambda c: c.draw_layer):
        cls.draw(im, result, style)
    return im
