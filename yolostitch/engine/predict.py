"""From a model's inference outputs to per-image detections carrying their masks and keypoints.

The per-anchor branches' rows line up with the detection rows (see ``heads.per_anchor``), so their
columns are appended to the detection's and one NMS keeps or drops each anchor's box, mask coefficients
and keypoints together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..ops import box_crop
from .postprocess import letterbox_gain_pad, non_max_suppression


@dataclass
class Detections:
    """One image's kept detections, best first, in network-input pixels."""

    boxes: torch.Tensor  # (n, 4) x1 y1 x2 y2
    conf: torch.Tensor  # (n,)
    cls: torch.Tensor  # (n,) class index (float, as NMS returns it)
    coefficients: torch.Tensor | None = None  # (n, nm) mask coefficients
    protos: torch.Tensor | None = None  # (nm, ph, pw) this image's mask prototypes
    keypoints: torch.Tensor | None = None  # (n, K, D): x, y in pixels [, visibility probability]
    image_classes: torch.Tensor | None = None  # (nc,) image-level class probabilities

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def masks(self, size: Sequence[int]) -> torch.Tensor | None:
        """(n, h, w) bool masks at the network-input size ``size``; None without a segmentation branch."""
        if self.coefficients is None or self.protos is None:
            return None
        return assemble_masks(self.protos, self.coefficients, self.boxes, size)

    def as_rows(self) -> torch.Tensor:
        """(n, 6) x1 y1 x2 y2 conf cls, the layout box metrics and drawing take."""
        return torch.cat((self.boxes, self.conf[:, None], self.cls[:, None]), 1)


def postprocess(outputs: dict[str, Any], conf_thres: float = 0.25, iou_thres: float = 0.45, nc: int | None = None,
                multi_label: bool = False, agnostic: bool = False, max_det: int = 300,
                kpt_shape: Sequence[int] | None = None) -> list[Detections]:
    """Decoded outputs of a model in eval mode -> one :class:`Detections` per image (one NMS for all branches)."""
    decoded = outputs["det"][0] if isinstance(outputs["det"], (tuple, list)) else outputs["det"]
    nc = decoded.shape[-1] - 5 if nc is None else nc
    columns, protos, nm = [decoded[..., :5 + nc]], None, 0
    if "seg" in outputs:
        coefficients, protos = outputs["seg"]
        nm = coefficients.shape[-1]
        columns.append(coefficients)
    k_cols = 0
    if "kpt" in outputs:
        keypoints = outputs["kpt"][0] if isinstance(outputs["kpt"], (tuple, list)) else outputs["kpt"]
        k_cols = keypoints.shape[-1]
        columns.append(keypoints)
    kept = non_max_suppression(torch.cat(columns, -1), conf_thres, iou_thres, nc=nc, multi_label=multi_label,
                               agnostic=agnostic, max_det=max_det)
    image_classes = outputs.get("cls")
    results = []
    for i, x in enumerate(kept):
        det = Detections(boxes=x[:, :4], conf=x[:, 4], cls=x[:, 5])
        if nm:
            det.coefficients, det.protos = x[:, 6:6 + nm], protos[i]
        if k_cols:
            k = kpt_shape[0] if kpt_shape else k_cols // 3
            det.keypoints = x[:, 6 + nm:6 + nm + k_cols].reshape(-1, k, k_cols // k)
        if image_classes is not None:
            det.image_classes = image_classes[i]
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
    top, left = int(round(pad[1] - 0.1)), int(round(pad[0] - 0.1))
    bottom, right = int(round(h - pad[1] + 0.1)), int(round(w - pad[0] + 0.1))
    return slice(top, bottom), slice(left, right)


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
