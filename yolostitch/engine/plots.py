"""Drawing batches: boxes, masks and keypoints on a mosaic of the batch's images (cv2 only, no fonts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .predict import assemble_masks

_PALETTE = np.array([(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
                     (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
                     (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
                     (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255)], np.uint8)


def colour(i: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in _PALETTE[i % len(_PALETTE)])


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
    h, w = tile.shape[:2]
    if "masks" in inst and len(inst["masks"]):
        for m, c, real in zip(inst["masks"], inst["cls"], inst["has_mask"]):
            if real:
                big = cv2.resize(m.numpy(), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                tile[big] = (0.5 * tile[big] + 0.5 * np.array(colour(int(c)))).astype(np.uint8)
    for j, (box, c) in enumerate(zip(inst["bboxes"], inst["cls"])):
        cx, cy, bw, bh = (box * torch.tensor([w, h, w, h])).tolist()
        p1, p2 = (round(cx - bw / 2), round(cy - bh / 2)), (round(cx + bw / 2), round(cy + bh / 2))
        cv2.rectangle(tile, p1, p2, colour(int(c)), 1, cv2.LINE_AA)
        label = (names or {}).get(int(c), str(int(c)))
        if "conf" in inst:
            label += f" {float(inst['conf'][j]):.2f}"
        cv2.putText(tile, label, (p1[0], max(p1[1] - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour(int(c)), 1,
                    cv2.LINE_AA)
        if "keypoints" in inst:
            for k, (x, y, v) in enumerate(inst["keypoints"][j].tolist()):
                if v > 0:
                    centre = (round(x * w), round(y * h))
                    cv2.circle(tile, centre, 3, colour(k + 5), -1 if v == 2 else 1, cv2.LINE_AA)


def predictions_as_batch(batch: dict[str, Any], dets: list, conf: float = 0.25) -> dict[str, Any]:
    """The batch's images with predictions (:class:`~yolostitch.engine.predict.Detections`, network-input pixels)
    in place of its labels, masks and keypoints included, for drawing."""
    h, w = batch["img"].shape[2:]
    kept = [(i, d, d.conf > conf) for i, d in enumerate(dets)]
    boxes = torch.cat([d.boxes[k].cpu() for _, d, k in kept]) if kept else torch.zeros((0, 4))
    xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / torch.tensor([w, h, w, h])
    out = {"img": batch["img"], "bboxes": xywh, "cls": torch.cat([d.cls[k].cpu() for _, d, k in kept]).long(),
           "conf": torch.cat([d.conf[k].cpu() for _, d, k in kept]),
           "batch_idx": torch.cat([torch.full((int(k.sum()),), i) for i, _, k in kept])}
    if kept and kept[0][1].coefficients is not None:
        out["masks"] = torch.cat([assemble_masks(d.protos, d.coefficients[k], d.boxes[k], (h, w)).cpu()
                                  for _, d, k in kept]).to(torch.uint8)
        out["has_mask"] = torch.ones(len(out["cls"]), dtype=torch.bool)
    if kept and kept[0][1].keypoints is not None:
        points = torch.cat([d.keypoints[k].cpu() for _, d, k in kept]).clone()
        points[..., :2] /= torch.tensor([w, h])
        if points.shape[-1] == 3:  # visibility probability -> drawn filled when likely visible, else not drawn
            points[..., 2] = (points[..., 2] > 0.5).float() * 2
        out["keypoints"] = points
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
