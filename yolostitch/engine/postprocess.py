"""From decoded predictions to kept detections: one NMS that carries every branch's extra columns."""

from __future__ import annotations

from typing import Sequence

import torch
import torchvision

from ..ops import xywh2xyxy

MAX_WH = 7680  # class offset for per-class NMS in one call (stock's trick): boxes of different classes never overlap


def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45, nc: int | None = None,
                        multi_label: bool = False, agnostic: bool = False, max_det: int = 300,
                        max_nms: int = 30000) -> list[torch.Tensor]:
    """Per image: (n, 6 + extra) rows ``x1 y1 x2 y2 conf cls extra...``, best first.

    ``pred`` is (bs, N, 5 + nc + extra): box xywh, objectness, class probabilities, then any per-anchor extras
    (mask coefficients, keypoints) that ride along with the box they belong to. Confidence is
    objectness x class probability; with ``multi_label`` a box may be kept once per class above threshold
    (as stock validation does).
    """
    nc = nc if nc is not None else pred.shape[2] - 5
    out = []
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        scores = x[:, 5:5 + nc] * x[:, 4:5]
        box, extra = xywh2xyxy(x[:, :4]), x[:, 5 + nc:]
        if multi_label:
            i, j = (scores > conf_thres).nonzero(as_tuple=False).T
            x = torch.cat((box[i], scores[i, j, None], j[:, None].float(), extra[i]), 1)
        else:
            conf, j = scores.max(1, keepdim=True)
            x = torch.cat((box, conf, j.float(), extra), 1)[conf.view(-1) > conf_thres]
        x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        offsets = x[:, 5:6] * (0 if agnostic else MAX_WH)
        keep = torchvision.ops.nms(x[:, :4] + offsets, x[:, 4], iou_thres)[:max_det]
        out.append(x[keep])
    return out


def letterbox_gain_pad(from_shape: Sequence[int], to_shape: Sequence[int],
                       ratio_pad: tuple | None = None) -> tuple[float, tuple[float, float]]:
    """(gain, (pad_x, pad_y)) of the letterbox that took an image of ``to_shape`` (h0, w0) to ``from_shape``
    (h, w): ``ratio_pad`` as the letterbox reported it, else recomputed (centred padding)."""
    if ratio_pad is not None:
        return ratio_pad[0][0], tuple(ratio_pad[1])
    gain = min(from_shape[0] / to_shape[0], from_shape[1] / to_shape[1])
    return gain, ((from_shape[1] - to_shape[1] * gain) / 2, (from_shape[0] - to_shape[0] * gain) / 2)


def scale_boxes(boxes: torch.Tensor, from_shape: Sequence[int], to_shape: Sequence[int],
                ratio_pad: tuple | None = None) -> torch.Tensor:
    """Map xyxy boxes from the network image (h, w) back to the original image (h0, w0), clipped to it.

    ``ratio_pad`` is the ((gain_h, gain_w), (pad_left, pad_top)) the letterbox reported; without it the
    letterbox is recomputed from the two shapes.
    """
    gain, pad = letterbox_gain_pad(from_shape, to_shape, ratio_pad)
    boxes = boxes.clone()
    boxes[:, [0, 2]] -= pad[0]
    boxes[:, [1, 3]] -= pad[1]
    boxes[:, :4] /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, to_shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, to_shape[0])
    return boxes
