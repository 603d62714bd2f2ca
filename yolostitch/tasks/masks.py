"""Instance masks: per-anchor mask coefficients carried through the NMS, and the image's prototypes."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torchvision
from torch import Tensor

from ..engine.coco_records import encode_masks, mask_records
from ..engine.draw import colour, to_numpy
from ..engine.metrics import DetectionStats, mask_iou
from ..engine.predict import assemble_masks, image_region, unletterbox_masks
from ..errors import FlagError
from ..heads.outputs import MaskRows
from ..losses.segment import mask_term
from ..ops import resize_masks
from .base import ImageTruth, Meter, SharedTargets, Task
from .detection import with_coco
from .registry import register_task

CHUNK = 32  # masks assembled this many instances at a time: the float intermediates stay small


class MaskMeter(Meter):
    """Mask P, R, mAP on the letterboxed network input (as stock YOLOv5-seg); labels without a polygon ignored."""

    def __init__(self, names: dict[int, str]):
        self.stats = DetectionStats(names, coco_max_det=100)

    def add_image(self, det: Any, truth: ImageTruth) -> None:
        iou, ignore = mask_scores(det, truth)
        self.stats.add_scores(iou, det.conf, det.cls, truth.true_cls, ignore)

    def results(self) -> dict[str, Any]:
        return with_coco(self.stats)


def image_area(size: Sequence[int], shape0: Sequence[int], ratio_pad: Any) -> Tensor:
    inside = torch.zeros(tuple(int(v) for v in size), dtype=torch.bool)
    inside[image_region(size, shape0, ratio_pad)] = True
    return inside


def mask_scores(det: Any, truth: ImageTruth) -> tuple[Tensor, Tensor]:
    """(mask IoU (labels, predictions), labels to ignore) for one image, on the network input.

    Masks are cropped to their boxes, so a prediction whose box misses every same-class label box has IoU 0 with
    all of them: only the others are assembled (an untrained model's 300 low-confidence boxes mostly miss).
    Pixels on the letterbox padding belong to no object. Labels without a polygon are ignored.
    """
    batch, keep, size = truth.batch, truth.keep, truth.size
    n_true, boxes, cls = len(truth.true_boxes), det.boxes.cpu(), det.cls.cpu()
    iou = torch.zeros((n_true, len(boxes)))
    has_mask = batch["has_mask"][keep] if "has_mask" in batch else torch.zeros(n_true, dtype=torch.bool)
    if n_true and len(boxes) and "masks" in batch:
        near = (torchvision.ops.box_iou(truth.true_boxes, boxes) > 0) & (truth.true_cls[:, None] == cls[None])
        candidates = near.any(0).nonzero().view(-1)
        if len(candidates):
            pred = assemble_masks(det.protos, det.coefficients[candidates], det.boxes[candidates], size).cpu()
            pred &= image_area(size, truth.shape0, truth.ratio_pad)
            iou[:, candidates] = mask_iou(resize_masks(batch["masks"][keep], size), pred)
    return iou, ~has_mask


@register_task
class InstanceMasks(Task):
    name = "seg"
    terms = ("seg",)
    default_gains = {"seg": 0.05}  # YOLOv5-seg weighs the mask loss with the box gain
    evolve_ranges = {"seg": (1, 0.005, 0.5)}
    sparse_loss = True
    result_key = "mask"
    in_table = True
    output_names = ("seg_coef", "seg_proto")
    draw_layer = 10
    record_priority = 1
    label_order = 2  # the polygon comes last on a multi-task label line
    label_alone_replaces_box = True  # a mask-only line is the polygon alone

    def dataset_options(self, data: Any, train: bool = False) -> dict[str, Any]:
        return {"use_masks": True}

    def loss_terms(self, output: Any, batch: dict[str, Any], shared: SharedTargets) -> dict[str, Tensor]:
        coefficients, protos = output
        n, device = len(shared.targets), shared.device
        has_mask = batch["has_mask"].to(device) if "masks" in batch else torch.zeros(n, dtype=torch.bool, device=device)
        masks = batch.get("masks", torch.zeros(n, 1, 1))
        return {"seg": mask_term(coefficients, protos, shared.assignments, masks, has_mask, shared.targets[:, 2:6])}

    def nms_columns(self, output: Any) -> Tensor:
        return output[0]

    def unaugment(self, output: Any, scale: float, flip_width: int | None) -> Tensor:
        raise FlagError("--augment: mask coefficients belong to their own pass's prototypes, so masks cannot be "
                        "merged over scaled and mirrored passes; run this model without --augment")

    def eval_output(self, tensors: list[Tensor]) -> MaskRows:
        return MaskRows(*tensors)

    def attach(self, det: Any, columns: Tensor | None, output: Any, image: int) -> None:
        det.fields["coefficients"], det.fields["protos"] = columns, output[1][image]

    def original_fields(self, det: Any, size: Sequence[int], shape0: Sequence[int], ratio_pad: Any
                        ) -> dict[str, Tensor]:
        """(n, h0, w0) bool masks on the original image, pixels on the letterbox padding excluded."""
        parts = [torch.zeros((0, *shape0), dtype=torch.bool)]
        for i in range(0, len(det), CHUNK):
            masks = assemble_masks(det.protos, det.coefficients[i:i + CHUNK], det.boxes[i:i + CHUNK], size)
            parts.append(unletterbox_masks(masks, shape0, ratio_pad).cpu())
        return {"masks": torch.cat(parts)}

    def batch_fields(self, det: Any, keep: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        masks = assemble_masks(det.protos, det.coefficients[keep], det.boxes[keep], size).cpu().to(torch.uint8)
        return {"masks": masks, "has_mask": torch.ones(len(masks), dtype=torch.bool)}

    def meter(self, names: dict[int, str]) -> Meter:
        return MaskMeter(names)

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], style: dict[str, Any]) -> None:
        masks = result.get("masks")
        if masks is None or not len(masks):
            return
        h0, w0 = image.shape[:2]
        alpha = style["mask_alpha"]
        classes = [int(c) for c in result["cls"]]
        for j in reversed(range(len(classes))):  # best detection painted last, on top
            region = to_numpy(masks[j]).astype(bool)
            if region.shape != (h0, w0):
                continue
            image[region] = (image[region] * (1 - alpha) + np.array(colour(classes[j])) * alpha).astype(np.uint8)

    @classmethod
    def draw_labels(cls, tile: np.ndarray, inst: dict[str, Tensor], style: dict[str, Any]) -> None:
        if "masks" not in inst or not len(inst["masks"]):
            return
        h, w = tile.shape[:2]
        for m, c, real in zip(inst["masks"], inst["cls"], inst["has_mask"]):
            if real:
                big = cv2.resize(m.numpy(), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                tile[big] = (0.5 * tile[big] + 0.5 * np.array(colour(int(c)))).astype(np.uint8)

    @classmethod
    def label_values(cls, result: dict[str, Any], j: int, scale: np.ndarray) -> list[float] | None:
        masks = result.get("masks")
        if masks is None:
            return None
        polygon = largest_contour(masks[j]) / scale
        return polygon.ravel().tolist() if len(polygon) else None  # empty mask: the box stands

    @classmethod
    def coco_records(cls, image_id: Any, kept: dict[str, Any]) -> list[dict] | None:
        if "masks" not in kept:
            return None
        return mask_records(image_id, kept["masks"], kept["conf"], kept["cls"], kept["boxes"])

    @classmethod
    def annotate_records(cls, records: list[dict], kept: dict[str, Any], maker: type) -> None:
        if maker is not cls and "masks" in kept:
            for r, rle in zip(records, encode_masks(kept["masks"])):
                r["segmentation"] = rle


def largest_contour(mask: Any) -> np.ndarray:
    """(M, 2) x, y pixel points of the mask's largest outer contour (by area); (0, 2) if it has < 3 points."""
    m = to_numpy(mask).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return np.zeros((0, 2))
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
