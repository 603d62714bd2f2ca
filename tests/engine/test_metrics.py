"""Metrics: matching and AP equal stock YOLOv5's; the COCO integration agrees with pycocotools."""

import contextlib
import io

import numpy as np
import pytest
import torch
import torchvision

from yolostitch.engine.metrics import DetectionStats, ap_per_class, match_predictions


def random_case(seed, images=40, nc=3):
    """Ground truth boxes and noisy predictions (jittered true boxes + false positives), per image."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(images):
        n = rng.integers(0, 8)
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(10, 150, (n, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        gt_cls = rng.integers(0, nc, n)
        keep = rng.random(n) < 0.8
        pred = gt[keep] + rng.normal(0, 8, (keep.sum(), 4))
        pred_cls = np.where(rng.random(keep.sum()) < 0.9, gt_cls[keep], rng.integers(0, nc, keep.sum()))
        m = rng.integers(0, 6)
        fxy = rng.uniform(0, 500, (m, 2))
        pred = np.concatenate([pred, np.concatenate([fxy, fxy + rng.uniform(10, 150, (m, 2))], 1)])
        pred_cls = np.concatenate([pred_cls, rng.integers(0, nc, m)])
        scores = rng.random(len(pred))
        order = np.argsort(-scores)
        p = np.concatenate([pred, scores[:, None], pred_cls[:, None]], 1)[order]
        cases.append((torch.tensor(gt, dtype=torch.float32), torch.tensor(gt_cls), torch.tensor(p, dtype=torch.float32)))
    return cases


def stats_of(cases, names):
    stats = DetectionStats(names)
    for gt, gt_cls, pred in cases:
        stats.add(pred, gt, gt_cls)
    return stats


def test_match_and_ap_equal_stock(stock_yolo):
    stock_yolo.import_stock_yolo()
    from yolov5.utils.metrics import ap_per_class as stock_ap_per_class
    from yolov5.val import process_batch

    iouv = torch.linspace(0.5, 0.95, 10)
    correct, conf, pcls, tcls = [], [], [], []
    for gt, gt_cls, pred in random_case(0, images=60):
        labels = torch.cat([gt_cls[:, None].float(), gt], 1)
        theirs = process_batch(pred, labels, iouv) if len(pred) else torch.zeros((0, 10), dtype=torch.bool)
        iou = torchvision.ops.box_iou(gt, pred[:, :4]) if len(gt) and len(pred) else torch.zeros((len(gt), len(pred)))
        ours = match_predictions(pred[:, 5], gt_cls, iou)
        assert torch.equal(ours, theirs.cpu())
        correct.append(ours), conf.append(pred[:, 4]), pcls.append(pred[:, 5]), tcls.append(gt_cls)
    args = [torch.cat(v).numpy() for v in (correct, conf, pcls, tcls)]
    _, _, p, r, _, ap, classes = stock_ap_per_class(*args, names={0: "a", 1: "b", 2: "c"})
    ours = ap_per_class(args[0].astype(float), *args[1:])
    np.testing.assert_allclose(ours["ap"], ap, atol=1e-9)
    np.testing.assert_allclose(ours["p"], p, atol=1e-9)
    np.testing.assert_allclose(ours["r"], r, atol=1e-9)
    assert ours["classes"].tolist() == classes.tolist()


def coco_eval(cases):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for k, (gt, gt_cls, pred) in enumerate(cases):
        images.append({"id": k, "width": 700, "height": 700})
        for b, c in zip(gt.tolist(), gt_cls.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": c, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for *b, s, c in pred.tolist():
            dets.append({"image_id": k, "category_id": int(c), "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i} for i in range(3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        e = COCOeval(gt, gt.loadRes(dets), "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
    return e.stats[1], e.stats[0]  # mAP50, mAP50-95


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_coco_integration_agrees_with_pycocotools(seed):
    cases = random_case(seed, images=80)
    ours = stats_of(cases, {0: "a", 1: "b", 2: "c"}).results(method="coco")
    map50, map_ = coco_eval(cases)
    assert abs(ours["map50"] - map50) <= 0.002 and abs(ours["map"] - map_) <= 0.002


def test_empty_inputs_give_zeros():
    stats = DetectionStats({0: "a"})
    stats.add(torch.zeros((0, 6)), torch.zeros((0, 4)), torch.zeros(0))
    assert stats.results()["map"] == 0.0
    stats.add(torch.tensor([[0, 0, 10, 10, 0.9, 0]]), torch.zeros((0, 4)), torch.zeros(0))  # only false positives
    assert stats.results()["map"] == 0.0
