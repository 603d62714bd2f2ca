"""A detect result (see ``engine.detector``) as YOLO label lines: ``detect.py --save-txt``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tasks import CLASS_FIELD, TASKS
from .draw import rows


def label_lines(result: dict[str, Any], save_conf: bool = False) -> list[str]:
    """YOLO txt lines of a result, normalised by the original image size, in this package's label forms.

    ``cls cx cy w h``, then each task's values in ``label_order``: with keypoints ``kx ky v`` per keypoint
    (``v`` 2 = visible, 0 = not), with masks the largest outer contour of each mask as a polygon, giving the
    multi-task line (see ``data.labels``); a task whose values alone make a line (the polygon of a
    segmentation-only model) replaces the box. An instance whose mask is empty keeps its box. ``save_conf``
    appends the confidence (the line is then a prediction record, no longer a training label).
    """
    h0, w0 = result["shape"]
    scale = np.array([w0, h0], dtype=np.float64)
    boxes = np.asarray(rows(result["boxes"]), dtype=np.float64).reshape(-1, 4)
    order = sorted((cls for cls in TASKS if not cls.anchor), key=lambda c: c.label_order)
    lines = []
    for j, (c, conf) in enumerate(zip(rows(result[CLASS_FIELD]), rows(result["conf"]))):
        x1, y1, x2, y2 = boxes[j]
        values = [(x1 + x2) / 2 / w0, (y1 + y2) / 2 / h0, (x2 - x1) / w0, (y2 - y1) / h0]
        parts = [(cls, v) for cls in order if (v := cls.label_values(result, j, scale)) is not None]
        if len(parts) == 1 and parts[0][0].label_alone_replaces_box:
            values = parts[0][1]
        else:
            values += [x for _, v in parts for x in v]
        if save_conf:
            values = values + [float(conf)]
        lines.append(" ".join([str(int(c))] + [f"{v:.6g}" for v in values]))
    return lines
