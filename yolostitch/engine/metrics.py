"""Detection metrics: prediction-label matching at IoU 0.50:0.95 and average precision per class.

Two ways to integrate the precision-recall curve are given, because the two references differ:
``stock`` (YOLOv5/ultralytics: trapezoid over the interpolated envelope at 101 recall points; the default,
so figures compare with stock YOLOv5's) and ``coco`` (pycocotools: mean of the envelope's precision at the
first point reaching each of 101 recall thresholds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchvision

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)


def match_predictions(pred_cls: torch.Tensor, true_cls: torch.Tensor, iou: torch.Tensor,
                      thresholds: torch.Tensor = IOU_THRESHOLDS) -> torch.Tensor:
    """(n_pred, n_thresholds) bool: is each prediction a true positive at each IoU threshold?

    At each threshold, among same-class pairs above it, each prediction keeps its best-IoU label, then each
    label keeps its first prediction; predictions come sorted by confidence, so that is the most confident
    one (stock YOLOv5's and ultralytics' rule, kept so figures compare).
    """
    correct = np.zeros((len(pred_cls), len(thresholds)), dtype=bool)
    same = (true_cls[:, None] == pred_cls[None, :]).cpu().numpy()
    iou = (iou * torch.as_tensor(same, device=iou.device)).cpu().numpy()  # (n_true, n_pred)
    for k, t in enumerate(thresholds.tolist()):
        true_i, pred_i = np.nonzero(iou >= t)
        if not len(true_i):
            continue
        order = iou[true_i, pred_i].argsort()[::-1]
        true_i, pred_i = true_i[order], pred_i[order]
        _, first = np.unique(pred_i, return_index=True)  # now in prediction order
        true_i, pred_i = true_i[first], pred_i[first]
        _, first = np.unique(true_i, return_index=True)
        correct[pred_i[first], k] = True
    return torch.from_numpy(correct)


def average_precision(recall: np.ndarray, precision: np.ndarray, method: str = "stock") -> float:
    """Area under one precision-recall curve (points sorted by decreasing confidence)."""
    if method == "coco":
        envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
        idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
        return float(np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0).mean())
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(np.concatenate(([1.0], precision, [0.0])))))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 method: str = "stock", eps: float = 1e-16) -> dict[str, np.ndarray]:
    """Per class with labels: AP at each IoU threshold, and P and R at the confidence maximising mean F1."""
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_labels = np.unique(target_cls, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    grid = np.linspace(0, 1, 1000)
    p_curve, r_curve = np.zeros((len(classes), 1000)), np.zeros((len(classes), 1000))
    for k, c in enumerate(classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / (n_labels[k] + eps)
        precision = tpc / (tpc + fpc)
        r_curve[k] = np.interp(-grid, -conf[mine], recall[:, 0], left=0)
        p_curve[k] = np.interp(-grid, -conf[mine], precision[:, 0], left=1)
        ap[k] = [average_precision(recall[:, j], precision[:, j], method) for j in range(tp.shape[1])]
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    best = _smooth(f1.mean(0), 0.1).argmax()
    return {"classes": classes.astype(int), "n_labels": n_labels, "ap": ap, "p": p_curve[:, best],
            "r": r_curve[:, best]}


def _smooth(y: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter over ``fraction`` of the points, edges padded with the end values."""
    n = round(len(y) * fraction * 2) // 2 + 1
    pad = np.ones(n // 2)
    return np.convolve(np.concatenate((pad * y[0], y, pad * y[-1])), np.ones(n) / n, mode="valid")


class DetectionStats:
    """Accumulates per-image matches; :meth:`results` gives P, R, mAP50, mAP50-95 overall and per class."""

    def __init__(self, names: dict[int, str]):
        self.names = names
        self.correct, self.conf, self.pred_cls, self.true_cls = [], [], [], []

    def add(self, pred: torch.Tensor, true_boxes: torch.Tensor, true_cls: torch.Tensor) -> None:
        """``pred`` (n, >=6) xyxy conf cls; ``true_boxes`` (m, 4) xyxy in the same pixel space."""
        iou = torchvision.ops.box_iou(true_boxes, pred[:, :4]) if len(pred) and len(true_boxes) else \
            torch.zeros((len(true_boxes), len(pred)))
        self.correct.append(match_predictions(pred[:, 5], true_cls, iou))
        self.conf.append(pred[:, 4].cpu())
        self.pred_cls.append(pred[:, 5].cpu())
        self.true_cls.append(true_cls.cpu())

    def results(self, method: str = "stock") -> dict[str, Any]:
        true_cls = torch.cat(self.true_cls).numpy() if self.true_cls else np.zeros(0)
        out = {"instances": int(len(true_cls)), "precision": 0.0, "recall": 0.0, "map50": 0.0, "map": 0.0,
               "per_class": {}}
        if not self.correct or not len(true_cls):
            return out
        r = ap_per_class(torch.cat(self.correct).numpy().astype(float), torch.cat(self.conf).numpy(),
                         torch.cat(self.pred_cls).numpy(), true_cls, method)
        ap50, ap_all = r["ap"][:, 0], r["ap"].mean(1)
        out.update(precision=float(r["p"].mean()), recall=float(r["r"].mean()), map50=float(ap50.mean()),
                   map=float(ap_all.mean()))
        for k, c in enumerate(r["classes"]):
            out["per_class"][self.names.get(int(c), str(c))] = {
                "instances": int(r["n_labels"][k]), "precision": float(r["p"][k]), "recall": float(r["r"][k]),
                "map50": float(ap50[k]), "map": float(ap_all[k])}
        return out
