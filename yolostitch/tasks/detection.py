"""Detection: the anchor task. Its target assignment serves every per-anchor task's loss, its decoded rows go
through the one NMS, its boxes are what the other tasks' rows hang on."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from ..engine.coco_records import box_records
from ..engine.draw import colour, label_tab, rows
from ..engine.metrics import DetectionStats
from ..engine.postprocess import scale_boxes
from ..heads.outputs import AnchorRows
from ..losses.assign import assign_targets, targets_from_batch
from ..losses.detection import detection_gains, detection_terms
from .base import ImageTruth, Meter, SharedTargets, Task
from .registry import register_task


class BoxMeter(Meter):
    """Box P, R, mAP50, mAP50-95 in original-image pixels (stock's matching), plus the COCO-method mAPs."""

    def __init__(self, names: dict[int, str], coco_max_det: int = 100):
        self.stats = DetectionStats(names, coco_max_det=coco_max_det)

    def add_image(self, det: Any, truth: ImageTruth) -> None:
        h, w = truth.size
        found = det.as_rows().cpu()
        found[:, :4] = scale_boxes(found[:, :4], (h, w), truth.shape0, truth.ratio_pad)
        self.stats.add(found, scale_boxes(truth.true_boxes, (h, w), truth.shape0, truth.ratio_pad), truth.true_cls)

    def results(self) -> dict[str, Any]:
        return with_coco(self.stats)


def with_coco(stats: DetectionStats) -> dict[str, Any]:
    r = stats.results()
    coco = stats.results(method="coco")
    r["coco_map50"], r["coco_map"] = coco["map50"], coco["map"]
    return r


@register_task
class Detection(Task):
    name = "det"
    anchor = True
    terms = ("box", "obj", "cls")
    required_hyp = ("box", "cls", "cls_pw", "obj", "obj_pw", "anchor_t")
    evolve_ranges = {"box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
                     "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0),
                     "fl_gamma": (0, 0.0, 2.0)}  # stock's ranges
    result_key = "box"
    in_table = True
    draw_layer = 20
    record_priority = 0

    iou_ratio = 1.0  # stock gr: objectness target = CIoU of the assigned prediction

    @property
    def nc(self) -> int:
        return self.head.nc

    @property
    def levels(self) -> int:
        return self.head.nl

    def gains(self, hyp: dict[str, Any], nl: int, imgsz: int) -> dict[str, float]:
        return detection_gains(hyp, nl, self.nc, imgsz)

    def shared_targets(self, output: Any, batch: dict[str, Any], hyp: dict[str, Any]) -> SharedTargets:
        device = output[0].device
        targets = targets_from_batch(batch).to(device)
        assignments = assign_targets(targets, self.head, [m.shape[2:4] for m in output], hyp["anchor_t"])
        return SharedTargets(targets, assignments, device, hyp, output[0].shape[0])

    def loss_terms(self, output: Any, batch: dict[str, Any], shared: SharedTargets) -> dict[str, Tensor]:
        return detection_terms(output, shared.assignments, shared.hyp, self.nc, self.iou_ratio)

    def nms_rows(self, output: Any) -> Tensor:
        return output[0]

    def keep_classes(self, output: Any, classes: Sequence[int]) -> AnchorRows:
        """Drop, before NMS, every anchor whose best class is not in ``classes`` (stock's ``--classes``: a box
        is not relabelled as its best allowed class, it goes)."""
        decoded, maps = output
        decoded = decoded.clone()
        nc = decoded.shape[-1] - 5
        wanted = torch.zeros(nc, dtype=torch.bool, device=decoded.device)
        wanted[[c for c in classes if 0 <= c < nc]] = True
        decoded[..., 4] *= wanted[decoded[..., 5:].argmax(-1)]
        return AnchorRows(decoded, maps)

    def unaugment(self, output: Any, scale: float, flip_width: int | None) -> Tensor:
        """xywh back to the unscaled input (stock's ``_descale_pred``)."""
        rows = output[0].clone()
        rows[..., :4] /= scale
        if flip_width is not None:
            rows[..., 0] = flip_width - rows[..., 0]
        return rows

    def original_fields(self, det: Any, size: Sequence[int], shape0: Sequence[int], ratio_pad: Any
                        ) -> dict[str, Tensor]:
        return {"boxes": scale_boxes(det.boxes.float(), size, shape0, ratio_pad).cpu(), "conf": det.conf.float().cpu(),
                "cls": det.cls.long().cpu()}

    def batch_fields(self, det: Any, keep: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        h, w = size
        boxes = det.boxes[keep].cpu()
        xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / torch.tensor([w, h, w, h])
        return {"bboxes": xywh, "cls": det.cls[keep].cpu().long(), "conf": det.conf[keep].cpu()}

    def meter(self, names: dict[int, str]) -> Meter:
        return BoxMeter(names)

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], style: dict[str, Any]) -> None:
        names, lw = style["names"], style["lw"]
        for box, conf, c in zip(rows(result["boxes"]), rows(result["conf"]), rows(result["cls"])):
            c = int(c)
            p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
            cv2.rectangle(image, p1, p2, colour(c), lw, cv2.LINE_AA)
            if not style["hide_labels"]:
                label = names.get(c, str(c)) + ("" if style["hide_conf"] else f" {float(conf):.2f}")
                label_tab(image, label, p1, colour(c), lw)

    @classmethod
    def draw_labels(cls, tile: np.ndarray, inst: dict[str, Tensor], style: dict[str, Any]) -> None:
        h, w = tile.shape[:2]
        for j, (box, c) in enumerate(zip(inst["bboxes"], inst["cls"])):
            cx, cy, bw, bh = (box * torch.tensor([w, h, w, h])).tolist()
            p1, p2 = (round(cx - bw / 2), round(cy - bh / 2)), (round(cx + bw / 2), round(cy + bh / 2))
            cv2.rectangle(tile, p1, p2, colour(int(c)), 1, cv2.LINE_AA)
            label = (style["names"] or {}).get(int(c), str(int(c)))
            if "conf" in inst:
                label += f" {float(inst['conf'][j]):.2f}"
            cv2.putText(tile, label, (p1[0], max(p1[1] - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour(int(c)), 1,
                        cv2.LINE_AA)

    @classmethod
    def coco_records(cls, image_id: Any, kept: dict[str, Any]) -> list[dict]:
        return box_records(image_id, kept["boxes"], kept["conf"], kept["cls"])
