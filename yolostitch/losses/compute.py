"""The training loss of a StitchModel's detection head, numerically equal to stock YOLOv5's ComputeLoss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .assign import assign_targets
from .detection import detection_gains, detection_terms


def targets_from_batch(batch: dict[str, Any]) -> Tensor:
    """The loader's per-instance fields as stock's targets (n, 6) = [image, class, cx, cy, w, h]."""
    boxes = batch["bboxes"].float()
    image = batch["batch_idx"].to(boxes.device, boxes.dtype).view(-1, 1)
    cls = batch["cls"].to(boxes.device, boxes.dtype).view(-1, 1)
    return torch.cat((image, cls, boxes.view(-1, 4)), 1)


class ComputeLoss:
    """``loss(outputs, batch) -> (total, terms)``: total = (sum of gained terms) * batch size, as stock.

    ``terms`` holds the detached gained ``box``, ``obj`` and ``cls`` values (stock's loss items).
    ``hyp`` is a hyperparameter dict as in ``data/hyps/hyp.scratch-low.yaml``, with the gains unscaled:
    they are rescaled here for the model's levels and classes and for ``imgsz``.
    """

    def __init__(self, model: nn.Module, hyp: dict[str, Any], imgsz: int = 640):
        self.head = model.model[model.heads["det"]]
        self.hyp = dict(hyp)
        self.nc: int = self.head.nc
        self.gains: dict[str, float] = detection_gains(self.hyp, self.head.nl, self.nc, imgsz)
        self.iou_ratio = 1.0  # stock gr: objectness target = CIoU of the assigned prediction

    def __call__(self, outputs: dict[str, Any], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        maps = outputs["det"]
        targets = targets_from_batch(batch).to(maps[0].device)
        assignments = assign_targets(targets, self.head, [m.shape[2:4] for m in maps], self.hyp["anchor_t"])
        raw = detection_terms(maps, assignments, self.hyp, self.nc, self.iou_ratio)
        gained = {name: raw[name] * gain for name, gain in self.gains.items()}
        total = (gained["box"] + gained["obj"] + gained["cls"]) * maps[0].shape[0]
        return total, {name: value.detach() for name, value in gained.items()}
