"""compute_loss for any combination of branches: one detection assignment shared by every per-anchor branch,
per-task terms, and a balancer combining the tasks. With only a Detect head it equals stock YOLOv5's loss."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .assign import assign_targets
from .balance import TaskBalance
from ..errors import ConfigError
from .detection import detection_gains, detection_terms
from ..ops import keypoint_sigmas
from .keypoints import keypoint_terms
from .segment import mask_term

# Gains of the new branches' terms, used when the hyp file does not set them (tuned like stock's box/obj/cls:
# for 3 levels; rescaled by 3/nl). seg follows YOLOv5-seg, which weighs the mask loss with the box gain.
# kdist: keypoint L1 distance in box sizes beside OKS (see losses.keypoints); 0 gives the OKS-only loss exactly.
BRANCH_GAINS = {"seg": 0.05, "kpt": 0.10, "kobj": 0.05, "kdist": 0.30, "img_cls": 0.05}
TASK_TERMS = {"det": ("box", "obj", "cls"), "seg": ("seg",), "kpt": ("kpt", "kobj", "kdist"), "cls": ("img_cls",)}


def targets_from_batch(batch: dict[str, Any]) -> Tensor:
    """The loader's per-instance fields as stock's targets (n, 6) = [image, class, cx, cy, w, h]."""
    boxes = batch["bboxes"].float()
    image = batch["batch_idx"].to(boxes.device, boxes.dtype).view(-1, 1)
    cls = batch["cls"].to(boxes.device, boxes.dtype).view(-1, 1)
    return torch.cat((image, cls, boxes.view(-1, 4)), 1)


def branch_gains(hyp: dict[str, Any], nl: int) -> dict[str, float]:
    return {name: float(hyp.get(name, default)) * (3 / nl if name != "img_cls" else 1.0)
            for name, default in BRANCH_GAINS.items()}


class ComputeLoss:
    """``loss(outputs, batch) -> (total, terms)``: total = balanced sum of gained terms x batch size (stock).

    ``terms`` holds every detached gained term (``box``, ``obj``, ``cls``, then ``seg``, ``kpt``, ``kobj``,
    ``img_cls`` for the branches present) and, for learned balancing, each task's weight (``w_<task>``).
    ``hyp`` is a hyperparameter dict as in ``data/hyps/hyp.scratch-low.yaml``; detection gains are rescaled
    here for the model's levels and classes and for ``imgsz`` as stock does. ``balance`` is ``fixed``,
    ``uncertainty`` or ``dwa`` (see :mod:`.balance`); its parameters (``self.balance``) train with the model.
    """

    def __init__(self, model: nn.Module, hyp: dict[str, Any], imgsz: int = 640, balance: str = "fixed",
                 kpt_sigmas: list[float] | None = None):
        if "det" not in model.heads:
            raise ConfigError("compute_loss needs a Detect head: its target assignment is shared by every branch")
        self.head = model.model[model.heads["det"]]
        self.hyp = dict(hyp)
        self.nc: int = self.head.nc
        self.tasks = [t for t in TASK_TERMS if t in model.heads]
        self.gains: dict[str, float] = detection_gains(self.hyp, self.head.nl, self.nc, imgsz)
        self.gains.update({k: v for k, v in branch_gains(self.hyp, self.head.nl).items()
                           if any(k in TASK_TERMS[t] for t in self.tasks)})
        self.iou_ratio = 1.0  # stock gr: objectness target = CIoU of the assigned prediction
        self.sigmas = None
        if "kpt" in model.heads:
            k = model.model[model.heads["kpt"]].kpt_shape[0]
            self.sigmas = torch.as_tensor(keypoint_sigmas(k, kpt_sigmas), dtype=torch.float32)
        self.balance = TaskBalance(balance, self.tasks)

    def __call__(self, outputs: dict[str, Any], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        maps = outputs["det"]
        device = maps[0].device
        targets = targets_from_batch(batch).to(device)
        assignments = assign_targets(targets, self.head, [m.shape[2:4] for m in maps], self.hyp["anchor_t"])
        raw = detection_terms(maps, assignments, self.hyp, self.nc, self.iou_ratio)
        if "seg" in outputs:
            coefficients, protos = outputs["seg"]
            has_mask = batch["has_mask"].to(device) if "masks" in batch else torch.zeros(len(targets), dtype=torch.bool,
                                                                                         device=device)
            masks = batch.get("masks", torch.zeros(len(targets), 1, 1))
            raw["seg"] = mask_term(coefficients, protos, assignments, masks, has_mask, targets[:, 2:6])
        if "kpt" in outputs:
            k = self.sigmas.numel()
            keypoints = batch.get("keypoints", torch.zeros(len(targets), k, 3))
            raw.update(keypoint_terms(outputs["kpt"], assignments, keypoints, self.sigmas))
        if "cls" in outputs:
            logits = outputs["cls"]
            present = torch.zeros_like(logits)
            present[batch["batch_idx"].to(device), batch["cls"].to(device).long()] = 1.0
            raw["img_cls"] = F.binary_cross_entropy_with_logits(logits, present)
        gained = {name: raw[name] * self.gains[name] for name in raw}
        per_task = {t: sum(gained[n] for n in TASK_TERMS[t]) for t in self.tasks}
        total, weights = self.balance(per_task)
        terms = {name: value.detach() for name, value in gained.items()}
        terms.update({f"w_{t}": torch.tensor(w) for t, w in weights.items()})
        return total * maps[0].shape[0], terms
