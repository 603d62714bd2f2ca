"""Keypoints (pose): K keypoints per anchor, carried through the NMS with their detection; OKS metrics."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from ..engine.coco_records import keypoint_records
from ..engine.draw import colour, point, rows
from ..engine.metrics import DetectionStats, keypoint_oks
from ..engine.predict import unletterbox_points
from ..errors import FlagError
from ..losses.keypoints import keypoint_terms
from ..ops import keypoint_sigmas
from .base import ImageTruth, Meter, SharedTargets, Task
from .detection import with_coco
from .registry import register_task

OKS_AREA = 0.53  # box area x 0.53 as the OKS scale, as ultralytics


class PoseMeter(Meter):
    """Keypoint P, R, mAP by OKS; labels without a labelled keypoint ignored; 20 detections per image for COCO."""

    def __init__(self, names: dict[int, str], kpt_shape: Sequence[int], sigmas: np.ndarray):
        self.stats = DetectionStats(names, coco_max_det=20)
        self.kpt_shape, self.sigmas = kpt_shape, sigmas

    def add_image(self, det: Any, truth: ImageTruth) -> None:
        batch, keep, (h, w) = truth.batch, truth.keep, truth.size
        n = len(truth.true_cls)
        true_kpts = batch["keypoints"][keep].clone() if "keypoints" in batch else torch.zeros((n, self.kpt_shape[0], 3))
        true_kpts[..., :2] *= torch.tensor([w, h])
        boxes = truth.true_boxes
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * OKS_AREA
        labelled = (true_kpts[..., 2] > 0).any(1) if true_kpts.shape[-1] > 2 else torch.ones(n, dtype=torch.bool)
        oks = keypoint_oks(true_kpts, det.keypoints.cpu(), area, self.sigmas, true_boxes=boxes)
        self.stats.add_scores(oks, det.conf, det.cls, truth.true_cls, ~labelled)

    def results(self) -> dict[str, Any]:
        return with_coco(self.stats)


@register_task
class Keypoints(Task):
    name = "kpt"
    terms = ("kpt", "kobj", "kdist")
    # kdist: keypoint L1 distance in box sizes beside OKS (see losses.keypoints); 0 gives the OKS-only loss
    default_gains = {"kpt": 0.10, "kobj": 0.05, "kdist": 0.30}
    evolve_ranges = {"kpt": (1, 0.01, 1.0), "kobj": (1, 0.005, 0.5), "kdist": (1, 0.0, 1.0)}
    sparse_loss = True
    result_key = "pose"
    in_table = True
    draw_layer = 30
    record_priority = 2
    label_order = 1

    def __init__(self, head=None, key=None, model=None):
        super().__init__(head, key, model)
        shape = getattr(head, "kpt_shape", None) or getattr(model, "kpt_shape", None)
        self.kpt_shape = tuple(int(v) for v in shape) if shape else None
        self.sigmas = None
        self.flip_idx = None
        self.configure({})

    def configure(self, data_options: dict[str, Any]) -> None:
        # left-right keypoint pairs (for --augment's mirrored pass): the data file's, else those the
        # checkpoint was trained with (the trainer keeps the data's flip_idx in the model config)
        config = getattr(self.model, "yaml", None) or {}
        self.flip_idx = data_options.get("flip_idx") or config.get("flip_idx")
        if self.kpt_shape:
            self.sigmas = torch.as_tensor(keypoint_sigmas(self.kpt_shape[0], data_options.get("kpt_sigmas")),
                                          dtype=torch.float32)

    def check_data(self, data: Any, cfg: str) -> None:
        if not data.kpt_shape:
            raise FlagError(f"{cfg} has a keypoint branch but {data.source} declares no kpt_shape")

    def check_weights(self, data: Any, weights: str) -> None:
        if list(self.kpt_shape or []) != list(data.kpt_shape or []):
            raise FlagError(f"{weights} predicts keypoints of shape {list(self.kpt_shape) if self.kpt_shape else None}"
                            f" but {data.source} has kpt_shape {data.kpt_shape}")

    def dataset_options(self, data: Any, train: bool = False) -> dict[str, Any]:
        options = {"kpt_shape": data.kpt_shape}
        if train:
            options["flip_idx"] = data.flip_idx if data.kpt_shape else None
        return options

    def loss_terms(self, output: Any, batch: dict[str, Any], shared: SharedTargets) -> dict[str, Tensor]:
        k = self.sigmas.numel()
        keypoints = batch.get("keypoints", torch.zeros(len(shared.targets), k, 3))
        return keypoint_terms(output, shared.assignments, keypoints, self.sigmas)

    def unaugment(self, output: Any, scale: float, flip_width: int | None) -> Tensor:
        """x, y back to the unscaled input; a mirrored pass also swaps left and right keypoints (``flip_idx``)."""
        k = self.kpt_shape[0] if self.kpt_shape else output[0].shape[-1] // 3
        rows = output[0].clone()
        points = rows.view(*rows.shape[:2], k, -1)
        points[..., :2] /= scale
        if flip_width is not None:
            if not self.flip_idx:
                raise FlagError("--augment mirrors the image, and the keypoint branch then needs flip_idx to swap "
                                "left and right keypoints: give it in the data YAML (checkpoints trained on data "
                                "with flip_idx carry it)")
            points[..., 0] = flip_width - points[..., 0]
            points = points[:, :, list(self.flip_idx)]
        return points.flatten(2)

    def nms_columns(self, output: Any) -> Tensor:
        return output[0]

    def attach(self, det: Any, columns: Tensor | None, output: Any, image: int) -> None:
        width = columns.shape[-1]
        k = self.kpt_shape[0] if self.kpt_shape else width // 3
        det.fields["keypoints"] = columns.reshape(-1, k, width // k)

    def original_fields(self, det: Any, size: Sequence[int], shape0: Sequence[int], ratio_pad: Any
                        ) -> dict[str, Tensor]:
        return {"keypoints": unletterbox_points(det.keypoints.float(), shape0, size, ratio_pad).cpu()}

    def batch_fields(self, det: Any, keep: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        h, w = size
        points = det.keypoints[keep].cpu().clone()
        points[..., :2] /= torch.tensor([w, h])
        if points.shape[-1] == 3:  # visibility probability -> drawn filled when likely visible, else not drawn
            points[..., 2] = (points[..., 2] > 0.5).float() * 2
        return {"keypoints": points}

    def meter(self, names: dict[int, str]) -> Meter:
        return PoseMeter(names, self.kpt_shape, self.sigmas.numpy())

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], style: dict[str, Any]) -> None:
        keypoints = result.get("keypoints")
        if keypoints is None or not len(keypoints):
            return
        lw = style["lw"]
        radius = max(lw, 2)
        for kpts in rows(keypoints):
            kpts = np.asarray(kpts, dtype=np.float64)
            seen = kpts[:, 2] > style["kpt_threshold"] if kpts.shape[1] > 2 else np.ones(len(kpts), bool)
            for a, b in style["skeleton"] or ():
                if 0 <= a < len(kpts) and 0 <= b < len(kpts) and seen[a] and seen[b]:
                    cv2.line(image, point(kpts[a]), point(kpts[b]), colour(a + 5), max(lw // 2, 1), cv2.LINE_AA)
            for k, (p, visible) in enumerate(zip(kpts, seen)):
                if visible:
                    cv2.circle(image, point(p), radius, colour(k + 5), -1, cv2.LINE_AA)

    @classmethod
    def draw_labels(cls, tile: np.ndarray, inst: dict[str, Tensor], style: dict[str, Any]) -> None:
        if "keypoints" not in inst:
            return
        h, w = tile.shape[:2]
        for kpts in inst["keypoints"]:
            for k, (x, y, v) in enumerate(kpts.tolist()):
                if v > 0:
                    cv2.circle(tile, (round(x * w), round(y * h)), 3, colour(k + 5), -1 if v == 2 else 1, cv2.LINE_AA)

    @classmethod
    def label_values(cls, result: dict[str, Any], j: int, scale: np.ndarray) -> list[float] | None:
        """``kx ky v`` per keypoint (``v`` 2 = visible, 0 = not: probability > 0.5, else ``0 0 0`` as labels mark
        absent ones); just ``kx ky`` when the model predicts no visibility."""
        keypoints = result.get("keypoints")
        if keypoints is None:
            return None
        kpts = np.asarray(rows(keypoints[j]), dtype=np.float64)
        xy = kpts[:, :2] / scale
        if kpts.shape[1] <= 2:
            return xy.ravel().tolist()
        visible = kpts[:, 2] > 0.5
        xyv = np.concatenate([xy, np.where(visible, 2.0, 0.0)[:, None]], 1)
        xyv[~visible] = 0
        return xyv.ravel().tolist()

    @classmethod
    def coco_records(cls, image_id: Any, kept: dict[str, Any]) -> list[dict] | None:
        if "keypoints" not in kept:
            return None
        return keypoint_records(image_id, kept["keypoints"], kept["conf"], kept["cls"], kept["boxes"])

    def export_metadata(self) -> dict[str, Any]:
        return {"kpt_shape": list(self.kpt_shape) if self.kpt_shape else None}

    @classmethod
    def metadata_defaults(cls) -> dict[str, Any]:
        return {"kpt_shape": None}
