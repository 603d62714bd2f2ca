"""Detection metrics: prediction-label matching at IoU 0.50:0.95 and average precision per class.

Two ways to integrate the precision-recall curve are given, because the two references differ:
``stock`` (YOLOv5/ultralytics: trapezoid over the interpolated envelope at 101 recall points; the default,
so figures compare with stock YOLOv5's) and ``coco`` (pycocotools: mean of the envelope's precision at the
first point reaching each of 101 recall thresholds).

They also match predictions to labels differently: stock by :func:`match_predictions`, COCOeval by
:func:`match_greedy`; :class:`DetectionStats` does both, so ``results("coco")`` equals COCOeval's figures.

The same matching and AP serve boxes, instance masks and keypoints: :class:`DetectionStats` takes any
label-by-prediction similarity (box IoU, :func:`mask_iou`, :func:`keypoint_oks`). Labels can be flagged
ignored with COCOeval's semantics (see :func:`match_with_ignore`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchvision

from ..ops import keypoint_sigmas

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)
def mask_iou(true_masks: torch.Tensor | np.ndarray, pred_masks: torch.Tensor | np.ndarray,
             chunk_bytes: int = 1 << 26) -> torch.Tensor:
    """(m, n) float32 IoU of binary masks (m, H, W) and (n, H, W) on one pixel grid; nonzero is foreground.

    Intersections are a matmul of the flattened masks, taken over slices of pixels so that the float copies
    never exceed ~``chunk_bytes`` (300 masks of 640x640 would otherwise need 0.5 GB). Counts stay exact
    (float32 is exact for integers up to 2**24). Two empty masks have IoU 0.
    """
    t = torch.as_tensor(true_masks)
    p = torch.as_tensor(pred_masks, device=t.device)
    m, n = len(t), len(p)
    if m == 0 or n == 0:
        return torch.zeros((m, n), device=t.device)
    t, p = t.reshape(m, -1), p.reshape(n, -1)
    if t.shape[1] != p.shape[1]:
        raise ValueError(f"mask sizes differ: {tuple(true_masks.shape[1:])} vs {tuple(pred_masks.shape[1:])}")
    step = max(1, chunk_bytes // (4 * (m + n)))
    inter = torch.zeros((m, n), device=t.device)
    area_t, area_p = torch.zeros(m, device=t.device), torch.zeros(n, device=t.device)
    for s in range(0, t.shape[1], step):
        tc, pc = (t[:, s:s + step] != 0).float(), (p[:, s:s + step] != 0).float()
        inter += tc @ pc.T
        area_t += tc.sum(1)
        area_p += pc.sum(1)
    union = area_t[:, None] + area_p[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def keypoint_oks(true_kpts: torch.Tensor | np.ndarray, pred_kpts: torch.Tensor | np.ndarray,
                 true_area: torch.Tensor | np.ndarray, sigmas: torch.Tensor | np.ndarray | None = None,
                 true_boxes: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """(m, n) object keypoint similarity of labels (m, K, 3) [x, y, v] and predictions (n, K, 2 or 3).

    As pycocotools' ``computeOks``: per keypoint e = d^2 / (2 sigma)^2 / (area + eps) / 2, and OKS is the mean
    of exp(-e) over the label's labelled keypoints (v > 0; labels given as (m, K, 2) count as all labelled).
    ``true_area`` is the object's area in pixels^2: COCO uses the annotation's ``area`` (the segment's area);
    YOLO-format labels have none, so pass box area x 0.53 as ultralytics does. ``sigmas`` defaults to
    :func:`~yolostitch.ops.keypoint_sigmas`. A label without labelled keypoints scores 0, unless ``true_boxes`` (m, 4 xyxy) is
    given: then, as COCO does, the distance is to the label's box grown by its size on each side (such labels
    are normally ignored, so this only decides whether a prediction lands on an ignored label).
    """
    t = torch.as_tensor(true_kpts)
    dtype = torch.promote_types(t.dtype, torch.float32)
    t = t.to(dtype)
    p = torch.as_tensor(pred_kpts, device=t.device, dtype=dtype)
    m, n = len(t), len(p)
    if m == 0 or n == 0:
        return torch.zeros((m, n), device=t.device, dtype=dtype)
    k = t.shape[1]
    sigmas = torch.as_tensor(keypoint_sigmas(k) if sigmas is None else sigmas, device=t.device, dtype=dtype)
    area = torch.as_tensor(true_area, device=t.device, dtype=dtype).reshape(m, 1, 1)
    eps = float(np.spacing(1))  # pycocotools' guard against zero area
    labelled = t[..., 2] > 0 if t.shape[-1] > 2 else torch.ones((m, k), dtype=torch.bool, device=t.device)
    d2 = (t[:, None, :, :2] - p[None, :, :, :2]).square().sum(-1)  # (m, n, K)
    if true_boxes is not None:
        b = torch.as_tensor(true_boxes, device=t.device, dtype=dtype).reshape(m, 1, 4)
        wh = b[..., 2:] - b[..., :2]
        lo, hi = (b[..., :2] - wh)[:, :, None], (b[..., 2:] + wh)[:, :, None]  # (m, 1, 1, 2)
        outside = ((lo - p[None, :, :, :2]).clamp(min=0) + (p[None, :, :, :2] - hi).clamp(min=0)).square().sum(-1)
        none = ~labelled.any(1)
        d2 = torch.where(none[:, None, None], outside, d2)
        labelled = labelled | none[:, None]  # unlabelled objects average over all keypoints
    e = d2 / (2 * sigmas).square() / (area + eps) / 2
    w = labelled[:, None].to(dtype)
    return (torch.exp(-e) * w).sum(-1) / w.sum(-1).clamp(min=1)


def match_predictions(pred_cls: torch.Tensor, true_cls: torch.Tensor, iou: torch.Tensor,
                      thresholds: torch.Tensor = IOU_THRESHOLDS) -> torch.Tensor:
    """(n_pred, n_thresholds) bool: is each prediction a true positive at each IoU threshold?

    At each threshold, among same-class pairs above it, each prediction keeps its best-IoU label, then each
    label keeps its first prediction; predictions come sorted by confidence, so that is the most confident
    one (stock YOLOv5's and ultralytics' rule, kept so figures compare).
    """
    same = (true_cls[:, None] == pred_cls[None, :]).cpu().numpy()
    iou = (iou * torch.as_tensor(same, device=iou.device)).cpu().numpy()  # (n_true, n_pred)
    return torch.from_numpy(_assign(iou, thresholds.tolist()) >= 0)


def match_with_ignore(pred_cls: torch.Tensor, true_cls: torch.Tensor, iou: torch.Tensor, true_ignore: torch.Tensor,
                      thresholds: torch.Tensor = IOU_THRESHOLDS) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, ignored), each (n_pred, n_thresholds) bool, with some labels flagged ignored (COCO's gtIgnore).

    At each threshold, predictions first match the labels not ignored (the rule of :func:`match_predictions`);
    those left over then match the ignored labels the same way, one prediction per label. A prediction matched
    to an ignored label is ``ignored`` there: neither a true nor a false positive, as COCOeval's dtIgnore.
    Ignored labels never count toward recall: leave them out of ``target_cls`` for :func:`ap_per_class`.
    """
    same = (true_cls[:, None] == pred_cls[None, :]).cpu().numpy()
    iou = iou.cpu().numpy()
    ignore = torch.as_tensor(true_ignore).cpu().numpy().astype(bool)[:, None]
    t = thresholds.tolist()
    real = _assign(np.where(same & ~ignore, iou, -1.0), t) >= 0
    ignored = _assign(np.where(same & ignore, iou, -1.0), t, taken=real) >= 0
    return torch.from_numpy(real), torch.from_numpy(ignored)


def match_greedy(pred_cls: torch.Tensor, true_cls: torch.Tensor, iou: torch.Tensor,
                 true_ignore: torch.Tensor | None = None,
                 thresholds: torch.Tensor = IOU_THRESHOLDS) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, ignored), each (n_pred, n_thresholds) bool, by COCOeval's rule (``evaluateImg``).

    Predictions, in the given order (most confident first), each take at each threshold the still unmatched
    same-class label of highest IoU at or above it, preferring any label not ignored over an ignored one.
    Unlike the stock rule, a prediction whose best label went to a more confident one can still take its
    second best, so a few more predictions count as true positives in crowded scenes. Ignored labels are
    matched once each (COCO's non-crowd ``_ignore``; crowd labels, which COCO lets match many times with IoU
    over the prediction's area, are not modelled).
    """
    m, n, t = len(true_cls), len(pred_cls), len(thresholds)
    correct, ignored = np.zeros((n, t), dtype=bool), np.zeros((n, t), dtype=bool)
    ignore = np.zeros(m, dtype=bool) if true_ignore is None else torch.as_tensor(true_ignore).cpu().numpy().astype(bool)
    same = (true_cls[:, None] == pred_cls[None, :]).cpu().numpy()
    iou = np.where(same, iou.cpu().numpy().astype(np.float64), -1.0).T  # (n, m)
    thr = np.round(thresholds.cpu().numpy().astype(np.float64), 6)  # COCO's doubles (0.55, not float32's 0.55000001)
    live = np.flatnonzero(iou.max(1, initial=-1.0) >= thr.min())  # predictions with some label in reach
    if not len(live):
        return torch.from_numpy(correct), torch.from_numpy(ignored)
    ok = iou[None, live] >= thr[:, None, None]  # (T, p, m)
    rank = np.where(ok, iou[None, live] + 2.0 * ~ignore, -np.inf)  # any label not ignored outranks ignored ones
    labels = np.arange(m)
    # Fixed-point iteration instead of a loop over predictions: each one takes its best label among those not
    # taken by more confident ones under the current guess. Once the first k are right the (k+1)-th is, so the
    # guess becomes the greedy assignment in at most p rounds (conflict chains are short: a few in practice),
    # and the greedy assignment is the only fixed point.
    choice = np.full((t, len(live)), -1)
    for _ in range(len(live)):
        held = choice[..., None] == labels  # (T, p, m)
        before = (np.cumsum(held, 1) - held) > 0  # taken by a more confident prediction
        r = np.where(before, -np.inf, rank)
        best = r.argmax(2)
        new = np.where(np.take_along_axis(r, best[..., None], 2)[..., 0] > -np.inf, best, -1)
        if np.array_equal(new, choice):
            break
        choice = new
    hit = choice.T >= 0  # (p, T)
    on_ignored = hit & ignore[np.maximum(choice.T, 0)]
    correct[live], ignored[live] = hit & ~on_ignored, on_ignored
    return torch.from_numpy(correct), torch.from_numpy(ignored)


def _assign(iou: np.ndarray, thresholds: list[float], taken: np.ndarray | None = None) -> np.ndarray:
    """(n_pred, n_thresholds) index of the label each prediction matches at each threshold, -1 for none.

    ``iou`` (n_true, n_pred) holds only eligible pairs (others below every threshold); ``taken`` (n_pred, T)
    marks predictions already matched elsewhere at that threshold.
    """
    match = np.full((iou.shape[1], len(thresholds)), -1, dtype=np.int64)
    for k, t in enumerate(thresholds):
        above = iou >= t
        if taken is not None:
            above &= ~taken[None, :, k]
        true_i, pred_i = np.nonzero(above)
        if not len(true_i):
            continue
        order = iou[true_i, pred_i].argsort()[::-1]
        true_i, pred_i = true_i[order], pred_i[order]
        _, first = np.unique(pred_i, return_index=True)  # now in prediction order
        true_i, pred_i = true_i[first], pred_i[first]
        _, first = np.unique(true_i, return_index=True)
        match[pred_i[first], k] = true_i[first]
    return match


def average_precision(recall: np.ndarray, precision: np.ndarray, method: str = "stock") -> float:
    """Area under one precision-recall curve (points sorted by decreasing confidence)."""
    if method == "coco":
        envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
        idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
        return float(np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0).mean())
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(np.concatenate(([1.0], precision, [0.0])))))
    x = np.linspace(0, 1, 101)
    integrate = getattr(np, "trapezoid", None) or np.trapz  # NumPy 2 name, else NumPy 1's (removed in 2.4)
    return float(integrate(np.interp(x, mrec, mpre), x))


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 method: str = "stock", eps: float = 1e-16, ignored: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per class with labels: AP at each IoU threshold, and P and R at the confidence maximising mean F1.

    ``tp`` (n, T) per prediction and threshold; ``ignored`` (n, T) bool, if given, drops a prediction at the
    thresholds where it is flagged (neither TP nor FP, COCO's dtIgnore; dropping equals COCO's keeping it as a
    repeated point). ``target_cls`` lists the labels counting toward recall, i.e. without ignored ones.
    """
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    keep = None if ignored is None else ~np.asarray(ignored, dtype=bool)[order]
    classes, n_labels = np.unique(target_cls, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    grid = np.linspace(0, 1, 1000)
    p_curve, r_curve = np.zeros((len(classes), 1000)), np.zeros((len(classes), 1000))
    for k, c in enumerate(classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        if keep is None:
            tpc = tp[mine].cumsum(0)
            fpc = (1 - tp[mine]).cumsum(0)
            recall = tpc / (n_labels[k] + eps)
            precision = tpc / (tpc + fpc)
            r_curve[k] = np.interp(-grid, -conf[mine], recall[:, 0], left=0)
            p_curve[k] = np.interp(-grid, -conf[mine], precision[:, 0], left=1)
            ap[k] = [average_precision(recall[:, j], precision[:, j], method) for j in range(tp.shape[1])]
            continue
        for j in range(tp.shape[1]):
            sel = mine & keep[:, j]
            if not sel.any():
                continue
            tpc = tp[sel, j].cumsum()
            recall, precision = tpc / (n_labels[k] + eps), tpc / np.arange(1, len(tpc) + 1)
            ap[k, j] = average_precision(recall, precision, method)
            if j == 0:
                r_curve[k] = np.interp(-grid, -conf[sel], recall, left=0)
                p_curve[k] = np.interp(-grid, -conf[sel], precision, left=1)
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
    """Accumulates per-image matches; :meth:`results` gives P, R, mAP50, mAP50-95 overall and per class.

    Works for any similarity: :meth:`add` takes boxes, :meth:`add_scores` a precomputed label-by-prediction
    matrix (box IoU, :func:`mask_iou`, :func:`keypoint_oks`), so box, mask and pose metrics are three of these.
    Each image is matched twice: by the stock rule (:func:`match_predictions`, for ``results("stock")``) and by
    COCOeval's (:func:`match_greedy`, for ``results("coco")``), the latter keeping only the ``coco_max_det``
    most confident predictions per image and class as COCOeval's maxDets does (100 for boxes and masks, 20 for
    keypoints).
    """

    def __init__(self, names: dict[int, str], thresholds: torch.Tensor = IOU_THRESHOLDS,
                 coco_max_det: int | None = 100):
        self.names, self.thresholds, self.coco_max_det = names, thresholds, coco_max_det
        self.correct, self.ignored, self.conf, self.pred_cls, self.true_cls = [], [], [], [], []
        self.coco_correct, self.coco_ignored = [], []

    def add(self, pred: torch.Tensor, true_boxes: torch.Tensor, true_cls: torch.Tensor,
            true_ignore: torch.Tensor | None = None) -> None:
        """``pred`` (n, >=6) xyxy conf cls; ``true_boxes`` (m, 4) xyxy in the same pixel space."""
        iou = torchvision.ops.box_iou(true_boxes, pred[:, :4]) if len(pred) and len(true_boxes) else \
            torch.zeros((len(true_boxes), len(pred)))
        self.add_scores(iou, pred[:, 4], pred[:, 5], true_cls, true_ignore)

    def add_scores(self, iou: torch.Tensor, pred_conf: torch.Tensor, pred_cls: torch.Tensor, true_cls: torch.Tensor,
                   true_ignore: torch.Tensor | None = None) -> None:
        """One image: ``iou`` (m, n) between its m labels and n predictions; ``true_ignore`` (m,) bool flags
        labels that neither count toward recall nor make a prediction landing on them a false positive."""
        pred_conf, pred_cls, true_cls = (torch.as_tensor(v).cpu() for v in (pred_conf, pred_cls, true_cls))
        iou = torch.as_tensor(iou).cpu().reshape(len(true_cls), len(pred_conf))
        order = torch.argsort(-pred_conf, stable=True)  # matching wants the most confident first
        pred_conf, pred_cls, iou = pred_conf[order], pred_cls[order], iou[:, order]
        ignore = None if true_ignore is None else torch.as_tensor(true_ignore).cpu().bool().reshape(len(true_cls))
        kept = _first_per_class(pred_cls, self.coco_max_det)  # COCOeval drops the rest before matching
        coco_correct = torch.zeros((len(pred_cls), len(self.thresholds)), dtype=torch.bool)
        coco_ignored = torch.ones_like(coco_correct)  # dropped predictions: ignored at every threshold
        coco_correct[kept], coco_ignored[kept] = match_greedy(pred_cls[kept], true_cls, iou[:, kept], ignore,
                                                              self.thresholds)
        if ignore is not None and ignore.any():
            correct, ignored = match_with_ignore(pred_cls, true_cls, iou, ignore, self.thresholds)
            true_cls = true_cls[~ignore]
        else:
            correct = match_predictions(pred_cls, true_cls, iou, self.thresholds)
            ignored = torch.zeros_like(correct)
        self.correct.append(correct)
        self.ignored.append(ignored)
        self.coco_correct.append(coco_correct)
        self.coco_ignored.append(coco_ignored)
        self.conf.append(pred_conf)
        self.pred_cls.append(pred_cls)
        self.true_cls.append(true_cls)

    def results(self, method: str = "stock") -> dict[str, Any]:
        """Ignored labels are not in ``instances``; P and R at the best mean-F1 confidence, at IoU 0.5."""
        true_cls = torch.cat(self.true_cls).numpy() if self.true_cls else np.zeros(0)
        out = {"instances": int(len(true_cls)), "precision": 0.0, "recall": 0.0, "map50": 0.0, "map": 0.0,
               "per_class": {}}
        if not self.correct or not len(true_cls):
            return out
        coco = method == "coco"
        correct = torch.cat(self.coco_correct if coco else self.correct).numpy()
        ignored = torch.cat(self.coco_ignored if coco else self.ignored).numpy()
        r = ap_per_class(correct.astype(float), torch.cat(self.conf).numpy(), torch.cat(self.pred_cls).numpy(),
                         true_cls, method, ignored=ignored if ignored.any() else None)
        ap50, ap_all = r["ap"][:, 0], r["ap"].mean(1)
        out.update(precision=float(r["p"].mean()), recall=float(r["r"].mean()), map50=float(ap50.mean()),
                   map=float(ap_all.mean()))
        for k, c in enumerate(r["classes"]):
            out["per_class"][self.names.get(int(c), str(c))] = {
                "instances": int(r["n_labels"][k]), "precision": float(r["p"][k]), "recall": float(r["r"][k]),
                "map50": float(ap50[k]), "map": float(ap_all[k])}
        return out


def _first_per_class(cls: torch.Tensor, k: int | None) -> torch.Tensor:
    """Bool mask of the first ``k`` entries of each class (all when k is None)."""
    if k is None or len(cls) <= k:
        return torch.ones(len(cls), dtype=torch.bool)
    same = cls[:, None] == cls[None, :]
    return (same.tril().sum(1) <= k)
