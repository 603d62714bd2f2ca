"""From a model's inference outputs to per-image detections carrying their masks and keypoints.

The per-anchor tasks' rows line up with the detection rows (see ``heads.per_anchor``), so their
columns are appended to the detection's and one NMS keeps or drops each anchor's box, mask coefficients,
keypoints (any per-anchor task's columns) together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..ops import box_crop, pad_edges
from ..tasks.base import Task, anchor_of, tasks_for_outputs
from .postprocess import letterbox_gain_pad, non_max_suppression


@dataclass
class Detections:
    """One image's kept detections, best first, in network-input pixels, plus what each task attached to them
    (``fields``, readable as attributes: ``coefficients``, ``protos``, ``keypoints``, ``image_classes``...; None
    when the model has no such task)."""

    boxes: torch.Tensor  # (n, 4) x1 y1 x2 y2
    conf: torch.Tensor  # (n,)
    cls: torch.Tensor  # (n,) class index (float, as NMS returns it)
    fields: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "fields":
            raise AttributeError(name)
        return self.fields.get(name)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def masks(self, size: Sequence[int]) -> torch.Tensor | None:
        """(n, h, w) bool masks at the network-input size ``size``; None without mask coefficients."""
        if self.coefficients is None or self.protos is None:
            return None
        return assemble_masks(self.protos, self.coefficients, self.boxes, size)

    def as_rows(self) -> torch.Tensor:
        """(n, 6) x1 y1 x2 y2 conf cls, the layout box metrics and drawing take."""
        return torch.cat((self.boxes, self.conf[:, None], self.cls[:, None]), 1)


def postprocess(outputs: dict[str, Any], conf_thres: float = 0.25, iou_thres: float = 0.45, nc: int | None = None,
                multi_label: bool = False, agnostic: bool = False, max_det: int = 300,
                tasks: Sequence[Task] | None = None) -> list[Detections]:
    """Eval outputs of a model -> one :class:`Detections` per image (one NMS for all tasks).

    The anchor task's decoded rows are the boxes; every other task appends its per-anchor columns, which the NMS
    keeps or drops with their row, and attaches its part to each image's detections. ``tasks``: the model's
    (:func:`~yolostitch.tasks.tasks_of`), else found from the outputs' keys.
    """
    tasks = list(tasks) if tasks is not None else tasks_for_outputs(outputs)
    anchor = anchor_of(tasks, "postprocess")
    decoded = anchor.nms_rows(outputs[anchor.key])
    nc = decoded.shape[-1] - 5 if nc is None else nc
    columns, spans, start = [decoded[..., :5 + nc]], [], 6
    for task in tasks:
        if task is anchor:
            continue
        extra = task.nms_columns(outputs[task.key])
        width = 0 if extra is None else extra.shape[-1]
        if extra is not None:
            columns.append(extra)
        spans.append((task, start, width, extra is not None))
        start += width
    kept = non_max_suppression(torch.cat(columns, -1), conf_thres, iou_thres, nc=nc, multi_label=multi_label,
                               agnostic=agnostic, max_det=max_det)
    results = []
    for i, x in enumerate(kept):
        det = Detections(boxes=x[:, :4], conf=x[:, 4], cls=x[:, 5])
        for task, begin, width, per_anchor in spans:
            task.attach(det, x[:, begin:begin + width] if per_anchor else None, outputs[task.key], i)
        results.append(det)
    return results


def assemble_masks(protos: torch.Tensor, coefficients: torch.Tensor, boxes: torch.Tensor,
                   size: Sequence[int], threshold: float = 0.5) -> torch.Tensor:
    """(n, h, w) bool: sigmoid(coefficients @ protos) upsampled to ``size`` (bilinear), cropped to each box."""
    nm, ph, pw = protos.shape
    h, w = int(size[0]), int(size[1])
    if not len(coefficients):
        return torch.zeros((0, h, w), dtype=torch.bool, device=protos.device)
    logits = (coefficients @ protos.float().view(nm, -1)).view(-1, ph, pw)
    probs = F.interpolate(logits[None], (h, w), mode="bilinear", align_corners=False)[0].sigmoid_()
    return (probs > threshold) & box_crop(boxes.to(probs), h, w)


def image_region(size: Sequence[int], shape0: Sequence[int], ratio_pad: tuple | None = None) -> tuple[slice, slice]:
    """Rows and columns of the letterboxed network input (``size`` h, w) that show the original image."""
    h, w = int(size[0]), int(size[1])
    _, pad = letterbox_gain_pad((h, w), shape0, ratio_pad)
    top, bottom, left, right = pad_edges(*pad)
    return slice(top, h - bottom), slice(left, w - right)


def unletterbox_masks(masks: torch.Tensor, shape0: Sequence[int], ratio_pad: tuple | None = None) -> torch.Tensor:
    """Masks (n, h, w) on the letterboxed network input -> (n, h0, w0) on the original image."""
    n = masks.shape[0]
    h0, w0 = int(shape0[0]), int(shape0[1])
    if not n:
        return torch.zeros((0, h0, w0), dtype=torch.bool, device=masks.device)
    rows, cols = image_region(masks.shape[1:], shape0, ratio_pad)
    inner = masks[:, rows, cols].float()
    return F.interpolate(inner[None], (h0, w0), mode="bilinear", align_corners=False)[0] > 0.5


def unletterbox_points(points: torch.Tensor, shape0: Sequence[int], from_shape: Sequence[int],
                       ratio_pad: tuple | None = None) -> torch.Tensor:
    """Keypoints (..., >=2) x, y on the network input -> original-image pixels (clipped); other columns kept."""
    gain, pad = letterbox_gain_pad(from_shape, shape0, ratio_pad)
    out = points.clone()
    out[..., 0] = ((out[..., 0] - pad[0]) / gain).clamp(0, shape0[1])
    out[..., 1] = ((out[..., 1] - pad[1]) / gain).clamp(0, shape0[0])
    return out
