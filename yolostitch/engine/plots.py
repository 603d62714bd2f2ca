"""Drawing batches: boxes, masks and keypoints on a mosaic of the batch's images (cv2 only, no fonts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..tasks import TASKS, Task
from .draw import colour

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
    """Every registered task draws its fields of these instances (masks, then boxes, then keypoints...)."""
    style = {"names": names or {}}
    for cls in sorted(TASKS, key=lambda c: c.draw_layer):
        cls.draw_labels(tile, inst, style)


def predictions_as_batch(batch: dict[str, Any], dets: list, tasks: Sequence[Task], conf: float = 0.25) -> dict[str, Any]:
    """The batch's images with predictions (:class:`~yolostitch.engine.predict.Detections`, network-input pixels)
    in place of its labels, each of the model's ``tasks`` giving its fields, for drawing."""
    size = batch["img"].shape[2:]
    kept = [(i, d, d.conf > conf) for i, d in enumerate(dets)]
    out: dict[str, Any] = {"img": batch["img"],
                           "batch_idx": torch.cat([torch.full((int(k.sum()),), i) for i, _, k in kept])}
    parts: dict[str, list[torch.Tensor]] = {}
    for _, d, k in kept:
        for task in tasks:
            for name, value in task.batch_fields(d, k, size).items():
                parts.setdefault(name, []).append(value)
    out.update({name: torch.cat(values) for name, values in parts.items()})
    return out


def plot_label_statistics(labels: list, names: dict[int, str], path: str | Path) -> Path | None:
    """labels.jpg: instances per class, box centres and box sizes (normalised) of a dataset's labels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cls = np.concatenate([lab.cls for lab in labels]) if labels else np.zeros(0)
    boxes = np.concatenate([lab.bboxes for lab in labels]) if labels else np.zeros((0, 4))
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.5))
    counts = np.bincount(cls.astype(int), minlength=len(names))
    ax[0].bar(range(len(counts)), counts, color=[np.array(colour(i)[::-1]) / 255 for i in range(len(counts))])
    ax[0].set_xticks(range(len(counts)), [names.get(i, str(i)) for i in range(len(counts))], rotation=90, fontsize=6)
    ax[0].set_title("instances per class", fontsize=9)
    ax[1].scatter(boxes[:, 0], boxes[:, 1], s=2, alpha=0.3)
    ax[1].set(xlim=(0, 1), ylim=(1, 0), title="box centres (x, y)")
    ax[2].scatter(boxes[:, 2], boxes[:, 3], s=2, alpha=0.3)
    ax[2].set(xlim=(0, 1), ylim=(0, 1), title="box sizes (w, h)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
