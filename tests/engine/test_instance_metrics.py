"""Mask IoU, keypoint OKS, ignored labels and COCO records: agreement with pycocotools' COCOeval."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolostitch.engine.coco_records import (box_records, encode_masks, image_id_of, keypoint_records,
                                            mask_records)
from yolostitch.engine.metrics import (DetectionStats, keypoint_oks, mask_iou, match_greedy,
                                       match_predictions, match_with_ignore)
from yolostitch.ops import keypoint_sigmas

NAMES = {0: "a", 1: "b", 2: "c"}
H, W = 80, 96
FAR_AREA = 1e11  # beyond COCOeval's 'all' area range [0, 1e10]: how a non-crowd label is made ignored there


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def coco_gt(images, anns, nc=3):
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i, "name": str(i)} for i in range(nc)]}
    quiet(gt.createIndex)
    return gt


def coco_map(gt, dets, iou_type, sigmas=None, max_dets=None):
    """(mAP50, mAP50-95) of COCOeval, read from its precision array: area 'all', the largest maxDets."""
    e = COCOeval(gt, quiet(gt.loadRes, dets), iou_type)
    if sigmas is not None:
        e.params.kpt_oks_sigmas = np.asarray(sigmas)
    if max_dets is not None:
        e.params.maxDets = [max_dets]
    quiet(e.evaluate), quiet(e.accumulate)
    p = e.eval["precision"][:, :, :, 0, -1]  # (T, R, K)
    return float(p[0][p[0] > -1].mean()), float(p[p > -1].mean())


def ellipses(params, h=H, w=W):
    """(n, h, w) bool masks of axis-aligned ellipses (cx, cy, rx, ry)."""
    y, x = np.mgrid[:h, :w]
    p = np.asarray(params, dtype=float).reshape(-1, 4)[:, :, None, None]
    return ((x - p[:, 0]) / p[:, 2]) ** 2 + ((y - p[:, 1]) / p[:, 3]) ** 2 <= 1


# ---------------------------------------------------------------- mask IoU

def test_mask_iou_brute_force_and_pycocotools():
    rng = np.random.default_rng(0)
    gt = rng.random((5, 30, 40)) < rng.uniform(0.05, 0.6, (5, 1, 1))
    pred = rng.random((7, 30, 40)) < rng.uniform(0.05, 0.6, (7, 1, 1))
    gt[0] = False  # an empty mask
    brute = np.zeros((5, 7))
    for i in range(5):
        for j in range(7):
            union = (gt[i] | pred[j]).sum()
            brute[i, j] = (gt[i] & pred[j]).sum() / union if union else 0.0
    ours = mask_iou(torch.from_numpy(gt), torch.from_numpy(pred.astype(np.uint8)))
    assert ours.shape == (5, 7) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), brute, atol=1e-6)
    np.testing.assert_allclose(mask_iou(gt, pred, chunk_bytes=4 * 12 * 50).numpy(), brute, atol=1e-6)  # chunked
    theirs = mask_utils.iou(encode_masks(pred), encode_masks(gt), [0] * 5)  # (n_dt, n_gt)
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs).T, atol=1e-6)
    assert mask_iou(gt[:0], pred).shape == (0, 7) and mask_iou(gt, pred[:0]).shape == (5, 0)


# ---------------------------------------------------------------- keypoint OKS

def random_people(rng, n, k):
    """Boxes xyxy (n, 4), keypoints (n, K, 3) inside them with some v=0, the last person with none labelled."""
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(20, 150, (n, 2))
    kpts = np.concatenate([xy[:, None] + rng.random((n, k, 2)) * wh[:, None],
                           rng.choice([0, 1, 2], (n, k, 1), p=[0.25, 0.25, 0.5])], -1)
    kpts[-1, :, 2] = 0
    return np.concatenate([xy, xy + wh], 1), kpts


@pytest.mark.parametrize("k", [17, 5])
def test_keypoint_oks_equals_compute_oks(k):
    rng = np.random.default_rng(k)
    boxes, gt_kpts = random_people(rng, 6, k)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(1) * 0.53
    pred = gt_kpts[rng.integers(0, 6, 9), :, :2] + rng.normal(0, 6, (9, k, 2))
    pred[-1] = boxes[-1, :2] - rng.uniform(0, 40, (k, 2))  # near the unlabelled person's box, partly outside
    scores = rng.random(9)
    sigmas = keypoint_sigmas(k)
    assert len(sigmas) == k and (k != 17 or abs(sigmas[0] - 0.026) < 1e-12)
    anns = [{"id": i + 1, "image_id": 0, "category_id": 0, "iscrowd": 0, "area": float(area[i]),
             "bbox": [*boxes[i, :2], *(boxes[i, 2:] - boxes[i, :2])], "keypoints": gt_kpts[i].reshape(-1).tolist(),
             "num_keypoints": int((gt_kpts[i, :, 2] > 0).sum())} for i in range(6)]
    gt = coco_gt([{"id": 0, "width": 500, "height": 500}], anns)
    dets = keypoint_records(0, np.concatenate([pred, np.ones((9, k, 1))], -1), scores, [0] * 9, np.zeros((9, 4)))
    for d, p in zip(dets, pred):  # full precision, not the records' 3 decimals
        d["keypoints"] = np.concatenate([p, np.ones((k, 1))], 1).reshape(-1).tolist()
    e = COCOeval(gt, quiet(gt.loadRes, dets), "keypoints")
    e.params.kpt_oks_sigmas = sigmas
    quiet(e.evaluate)
    theirs = np.asarray(e.ious[(0, 0)])  # (dets by descending score, gts)
    order = np.argsort(-scores, kind="mergesort")
    ours = keypoint_oks(gt_kpts, pred[order], area, sigmas, true_boxes=boxes).numpy()
    assert 0.05 < ours[:-1].mean() < 0.95  # not all ~0 or ~1
    np.testing.assert_allclose(ours, theirs.T, atol=1e-6)
    # without boxes, an object with no labelled keypoint scores 0; a predicted visibility column is ignored
    no_box = keypoint_oks(torch.tensor(gt_kpts), torch.tensor(np.concatenate([pred, np.zeros((9, k, 1))], -1)),
                          torch.tensor(area), torch.tensor(sigmas))
    np.testing.assert_allclose(no_box[:-1].numpy(), keypoint_oks(gt_kpts, pred, area, sigmas)[:-1].numpy())
    assert no_box[-1].abs().max() == 0


# ---------------------------------------------------------------- ignored labels

def test_match_with_ignore_rules():
    thresholds = torch.tensor([0.5, 0.75])
    # labels: 0 real, 1 ignored; predictions by confidence: p0 on both, p1 on the ignored one, p2 on the real one
    iou = torch.tensor([[0.6, 0.0, 0.8],
                        [0.9, 0.7, 0.0]])
    cls = torch.zeros(3)
    correct, ignored = match_with_ignore(cls, torch.zeros(2), iou, torch.tensor([False, True]), thresholds)
    # 0.5: the real label goes to p0 (most confident), p1 takes the ignored one, p2 is a FP.
    # 0.75: only p2 reaches the real label; p0 falls back to the ignored one; p1 (0.7) is a FP.
    assert correct.tolist() == [[True, False], [False, False], [False, True]]
    assert ignored.tolist() == [[False, True], [True, False], [False, False]]
    # no ignored labels: identical to match_predictions
    rng = np.random.default_rng(1)
    iou = torch.tensor(rng.random((6, 12)), dtype=torch.float32)
    pc, tc = torch.tensor(rng.integers(0, 2, 12)), torch.tensor(rng.integers(0, 2, 6))
    c, ig = match_with_ignore(pc, tc, iou, torch.zeros(6, dtype=torch.bool))
    assert torch.equal(c, match_predictions(pc, tc, iou)) and not ig.any()


def test_match_greedy_equals_cocoeval_matches():
    """Per image and class, match_greedy marks exactly COCOeval's matched (dtm, dtIgnore) detections, in a
    crowded scene where the stock rule and COCO's differ."""
    rng = np.random.default_rng(5)
    images, anns, dets, ours, stock_differs = [], [], [], {}, False
    for k in range(25):
        n = rng.integers(1, 9)
        xy = rng.uniform(0, 40, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(30, 60, (n, 2))], 1)  # much overlapping labels
        gt_cls, ignore = rng.integers(0, 2, n), rng.random(n) < 0.25
        pred = gt[rng.integers(0, n, 3 * n)] + rng.normal(0, 6, (3 * n, 4))
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
        pred_cls, scores = rng.integers(0, 2, 3 * n), rng.random(3 * n)
        images.append({"id": k, "width": 300, "height": 300})
        for b, c, ig in zip(gt, gt_cls, ignore):
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(c), "iscrowd": 0,
                         "bbox": [*b[:2], *(b[2:] - b[:2])], "area": FAR_AREA if ig else float((b[2:] - b[:2]).prod())})
        dets += [{"image_id": k, "category_id": int(c), "score": float(sc), "bbox": [*b[:2], *(b[2:] - b[:2])]}
                 for b, sc, c in zip(pred, scores, pred_cls)]  # exact boxes: IoUs must match bit for bit
        for c in (0, 1):
            g, d = gt_cls == c, np.flatnonzero(pred_cls == c)
            d = d[np.argsort(-scores[d], kind="mergesort")]
            iou = torchvision.ops.box_iou(torch.tensor(gt[g]), torch.tensor(pred[d]))
            ours[k, c] = match_greedy(torch.tensor(pred_cls[d]), torch.tensor(gt_cls[g]), iou, torch.tensor(ignore[g]))
            stock = match_with_ignore(torch.tensor(pred_cls[d]), torch.tensor(gt_cls[g]), iou, torch.tensor(ignore[g]))
            stock_differs |= not torch.equal(stock[0], ours[k, c][0])
    gt = coco_gt(images, anns, nc=2)
    e = COCOeval(gt, quiet(gt.loadRes, dets), "bbox")
    quiet(e.evaluate)
    checked = 0
    for ev in e.evalImgs:
        if ev is None or ev["aRng"] != e.params.areaRng[0]:
            continue
        correct, ignored = ours[ev["image_id"], ev["category_id"]]
        dtm, dtig = ev["dtMatches"].T > 0, ev["dtIgnore"].T > 0
        assert np.array_equal(correct.numpy(), dtm & ~dtig) and np.array_equal(ignored.numpy(), dtm & dtig)
        checked += len(correct)
    assert checked > 100 and stock_differs and any(v[1].any() for v in ours.values())


def mask_case(seed, images=60, nc=3, ignore_p=0.15):
    """Per image: label masks, classes, ignore flags; predicted masks, scores, classes (jittered + spurious)."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(images):
        n = rng.integers(0, 7)
        gt = np.concatenate([rng.uniform([10, 10], [W - 10, H - 10], (n, 2)), rng.uniform(4, 22, (n, 2))], 1)
        gt_cls = rng.integers(0, nc, n)
        ignore = rng.random(n) < ignore_p
        keep = rng.random(n) < 0.85
        pred = gt[keep] + np.concatenate(
            [rng.normal(0, 1, (keep.sum(), 2)) * gt[keep, 2:] * rng.uniform(0, 0.2, (keep.sum(), 1)),
             gt[keep, 2:] * (rng.lognormal(0, 0.1, (keep.sum(), 2)) - 1)], 1)
        pred_cls = np.where(rng.random(keep.sum()) < 0.9, gt_cls[keep], rng.integers(0, nc, keep.sum()))
        m = rng.integers(0, 5)
        spurious = np.concatenate([rng.uniform([10, 10], [W - 10, H - 10], (m, 2)), rng.uniform(4, 22, (m, 2))], 1)
        pred = np.concatenate([pred, spurious])
        pred[:, 2:] = pred[:, 2:].clip(1.5)
        scores = np.concatenate([rng.uniform(0.2, 1, keep.sum()), rng.uniform(0, 0.7, m)])
        cases.append((ellipses(gt), gt_cls, ignore, ellipses(pred), scores,
                      np.concatenate([pred_cls, rng.integers(0, nc, m)])))
    return cases


def mask_stats(cases, coco_max_det=100):
    stats = DetectionStats(NAMES, coco_max_det=coco_max_det)
    for gt, gt_cls, ignore, pred, scores, pred_cls in cases:
        stats.add_scores(mask_iou(gt, pred), torch.tensor(scores), torch.tensor(pred_cls), torch.tensor(gt_cls),
                         torch.tensor(ignore))
    return stats


@pytest.mark.parametrize("max_det", [100, 2])
def test_mask_map_agrees_with_cocoeval_segm(max_det):
    cases = mask_case(7)
    assert sum(c[2].sum() for c in cases) >= 10  # ignored labels are exercised
    images, anns, dets = [], [], []
    for k, (gt, gt_cls, ignore, pred, scores, pred_cls) in enumerate(cases):
        images.append({"id": k, "width": W, "height": H})
        for rle, c, ig in zip(encode_masks(gt), gt_cls, ignore):
            area = FAR_AREA if ig else float(mask_utils.area(rle))
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(c), "iscrowd": 0,
                         "segmentation": rle, "area": area, "bbox": mask_utils.toBbox(rle).tolist()})
        dets += mask_records(k, pred, scores, pred_cls)
    json.dumps(dets)
    map50, map_ = coco_map(coco_gt(images, anns), dets, "segm", max_dets=max_det)
    ours = mask_stats(cases, coco_max_det=max_det).results(method="coco")
    print(f"segm maxDets={max_det}: ours mAP50 {ours['map50']:.5f} mAP {ours['map']:.5f}; "
          f"COCOeval mAP50 {map50:.5f} mAP {map_:.5f}")
    assert 0.2 < map50 < 0.95 and 0.2 < map_ < 0.95 and map_ < map50
    assert abs(ours["map50"] - map50) <= 0.002 and abs(ours["map"] - map_) <= 0.002
    assert ours["instances"] == sum(int((~c[2]).sum()) for c in cases)


def pose_case(seed, k, images=60, nc=2):
    """Per image: label boxes, keypoints (some people with none labelled -> ignored), classes; predictions."""
    rng = np.random.default_rng(seed)
    sigmas = keypoint_sigmas(k)
    cases = []
    for _ in range(images):
        n = rng.integers(0, 6)
        xy, wh = rng.uniform(0, 400, (n, 2)), rng.uniform(20, 160, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        kpts = np.concatenate([xy[:, None] + rng.random((n, k, 2)) * wh[:, None],
                               rng.choice([0, 1, 2], (n, k, 1), p=[0.2, 0.3, 0.5])], -1)
        kpts[rng.random(n) < 0.15, :, 2] = 0
        kpts[kpts[..., 2] == 0, :2] = 0  # COCO's convention for unlabelled points; must not matter
        area = wh.prod(1) * 0.53
        cls = rng.integers(0, nc, n)
        keep = rng.random(n) < 0.85
        # keypoint noise scaled so OKS spreads over (0, 1): d = q * 2 sigma sqrt(area) * N(0, 1)
        q = rng.uniform(0, 0.8, (keep.sum(), 1, 1))
        truth = np.where(kpts[keep, :, 2:] > 0, kpts[keep, :, :2], xy[keep, None] + wh[keep, None] / 2)
        scale = 2 * sigmas[None, :, None] * np.sqrt(area[keep])[:, None, None]
        pred = truth + q * scale * rng.normal(0, 1, truth.shape)
        pred_cls = np.where(rng.random(keep.sum()) < 0.9, cls[keep], rng.integers(0, nc, keep.sum()))
        m = rng.integers(0, 4)
        fxy, fwh = rng.uniform(0, 400, (m, 2)), rng.uniform(20, 160, (m, 2))
        pred = np.concatenate([pred, fxy[:, None] + rng.random((m, k, 2)) * fwh[:, None]])
        scores = np.concatenate([rng.uniform(0.2, 1, keep.sum()), rng.uniform(0, 0.7, m)])
        cases.append((boxes, kpts, area, cls, pred, scores, np.concatenate([pred_cls, rng.integers(0, nc, m)])))
    return cases, sigmas


@pytest.mark.parametrize("k", [17, 5])
def test_pose_map_agrees_with_cocoeval_keypoints(k):
    cases, sigmas = pose_case(11 + k, k)
    images, anns, dets = [], [], []
    stats = DetectionStats({0: "a", 1: "b"})
    for i, (boxes, kpts, area, cls, pred, scores, pred_cls) in enumerate(cases):
        assert len(pred) <= 20  # COCOeval's keypoint maxDets
        images.append({"id": i, "width": 600, "height": 600})
        for b, kp, a, c in zip(boxes, kpts, area, cls):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0, "area": float(a),
                         "bbox": [*b[:2], *(b[2:] - b[:2])], "keypoints": kp.reshape(-1).tolist(),
                         "num_keypoints": int((kp[:, 2] > 0).sum())})  # 0 -> COCOeval ignores the label
        full = np.concatenate([pred, np.ones((len(pred), k, 1))], -1)
        for r, p in zip(keypoint_records(i, full, scores, pred_cls, np.zeros((len(pred), 4))), full):
            r["keypoints"] = p.reshape(-1).tolist()
            dets.append(r)
        oks = keypoint_oks(kpts, pred, area, sigmas, true_boxes=boxes)
        stats.add_scores(oks, torch.tensor(scores), torch.tensor(pred_cls), torch.tensor(cls),
                         torch.tensor(~(kpts[..., 2] > 0).any(1)))
    n_ignored = sum(int((~(c[1][..., 2] > 0).any(1)).sum()) for c in cases)
    assert n_ignored >= 5
    map50, map_ = coco_map(coco_gt(images, anns, nc=2), dets, "keypoints", sigmas)
    ours = stats.results(method="coco")
    print(f"keypoints K={k}: ours mAP50 {ours['map50']:.5f} mAP {ours['map']:.5f}; "
          f"COCOeval mAP50 {map50:.5f} mAP {map_:.5f}")
    assert 0.2 < map50 < 0.95 and 0.2 < map_ < 0.95 and map_ < map50
    assert abs(ours["map50"] - map50) <= 0.002 and abs(ours["map"] - map_) <= 0.002


def test_prediction_on_ignored_label_changes_nothing():
    cases = mask_case(3, images=30)

    def only_on_ignored(c, j):  # gt j's mask reaches no other same-class label, no prediction reaches gt j
        others = (c[1] == c[1][j]) & (np.arange(len(c[1])) != j)
        mine = c[5] == c[1][j]
        return (not others.any() or mask_iou(c[0][others], c[0][j:j + 1]).max() < 0.5) and \
            (not mine.any() or mask_iou(c[0][j:j + 1], c[3][mine]).max() < 0.5)

    i, j = next((i, j) for i, c in enumerate(cases) for j in np.flatnonzero(c[2]) if only_on_ignored(c, j))
    gt, gt_cls, ignore, pred, scores, pred_cls = cases[i]
    extra = list(cases)  # plus a confident prediction exactly on the ignored label
    extra[i] = (gt, gt_cls, ignore, np.concatenate([pred, gt[j:j + 1]]), np.append(scores, 0.999),
                np.append(pred_cls, gt_cls[j]))
    for method in ("stock", "coco"):
        base, with_extra = mask_stats(cases).results(method), mask_stats(extra).results(method)
        assert with_extra == base
    # the same prediction is a false positive once the label is not ignored: the check above is not vacuous
    unignored = [(g, c, np.zeros_like(ig), p, s, pc) for g, c, ig, p, s, pc in cases]
    unignored_extra = [(g, c, np.zeros_like(ig), p, s, pc) for g, c, ig, p, s, pc in extra]
    assert mask_stats(unignored).results("coco") != mask_stats(unignored_extra).results("coco")
    assert mask_stats(unignored).results()["instances"] == mask_stats(cases).results()["instances"] + \
        sum(int(c[2].sum()) for c in cases)


def test_add_equals_add_scores_on_boxes():
    rng = np.random.default_rng(4)
    a, b = DetectionStats(NAMES), DetectionStats(NAMES)
    for _ in range(20):
        xy = rng.uniform(0, 200, (5, 2))
        gt = torch.tensor(np.concatenate([xy, xy + rng.uniform(10, 60, (5, 2))], 1), dtype=torch.float32)
        gt_cls = torch.tensor(rng.integers(0, 3, 5))
        p = gt[rng.integers(0, 5, 8)] + torch.randn(8, 4) * 6
        conf = torch.tensor(rng.random(8), dtype=torch.float32)
        pred = torch.cat([p, conf[:, None], torch.tensor(rng.integers(0, 3, 8))[:, None].float()], 1)
        pred = pred[pred[:, 4].argsort(descending=True)]
        a.add(pred, gt, gt_cls)
        shuffled = pred[torch.randperm(8)]  # add_scores sorts by confidence itself
        b.add_scores(torchvision.ops.box_iou(gt, shuffled[:, :4]), shuffled[:, 4], shuffled[:, 5], gt_cls)
    assert a.results() == b.results() and a.results("coco") == b.results("coco")
    assert a.results()["map"] > 0


# ---------------------------------------------------------------- records

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_records():
    assert image_id_of("/data/images/000000000139.jpg") == 139 and image_id_of("a/img_3.png") == "img_3"
    boxes = torch.tensor([[10.0, 20.0, 40.5, 60.25], [0, 0, 1, 1]])
    recs = box_records(139, boxes, torch.tensor([0.912345678, 0.5]), torch.tensor([2.0, 0.0]), category_ids=[1, 2, 3])
    assert recs[0] == {"image_id": 139, "category_id": 3, "bbox": [10.0, 20.0, 30.5, 40.25], "score": 0.91235}
    masks = ellipses([[20, 20, 8, 5], [50, 40, 12, 20]])
    recs = mask_records("x", torch.from_numpy(masks), [0.9, 0.8], [0, 1], boxes_xyxy=boxes)
    json.dumps(recs)
    assert isinstance(recs[0]["segmentation"]["counts"], str) and recs[1]["bbox"] == [0.0, 0.0, 1.0, 1.0]
    decoded = mask_utils.decode([{**r["segmentation"], "counts": r["segmentation"]["counts"].encode()} for r in recs])
    assert np.array_equal(decoded.transpose(2, 0, 1), masks)
    kp = np.array([[[1.23456, 2.0, 0.5], [3.0, 4.0, 0.25]]])
    rec = keypoint_records(5, kp, [0.7], [0], [[0, 0, 4, 5]])[0]
    assert rec["keypoints"] == [1.235, 2.0, 0.5, 3.0, 4.0, 0.25] and rec["bbox"] == [0.0, 0.0, 4.0, 5.0]
    assert len(keypoint_records(5, kp[..., :2], [0.7], [0], [[0, 0, 4, 5]])[0]["keypoints"]) == 6
    assert mask_records(1, np.zeros((0, 4, 4)), [], []) == []
