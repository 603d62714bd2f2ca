"""The whole validation pipeline for masks and keypoints (letterbox, one NMS, mask assembly, unletterboxing,
COCO records) against pycocotools, with an oracle model that predicts each batch's labels, perturbed.

The COCO ground truth takes the masks our loader rasterised: cv2's and pycocotools' polygon rasterisers
disagree on boundary pixels, which at these small sizes moves mask IoU by several points; the metric is
what is compared here (``test_instance_metrics`` checks mask IoU itself against pycocotools').
"""

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from yolostitch.data.scan import scan_split
from yolostitch.data.shapes import generate_shapes
from yolostitch.engine.predict import unletterbox_masks
from yolostitch.engine.validator import evaluate, val_loader

IMGSZ, K = 128, 5


class Oracle(torch.nn.Module):
    """Predicts the labels of each batch (which it is handed in order): boxes jittered, masks from prototypes
    equal to the true masks (shifted by 0-3 pixels), keypoints with noise, plus two false positives."""

    def __init__(self, batches, nc: int):
        super().__init__()
        self.batches, self.nc, self.names = iter(batches), nc, {i: str(i) for i in range(nc)}
        self.heads = {"det": 0, "seg": 1, "kpt": 2}
        self.model = [None, None, SimpleNamespace(kpt_shape=(K, 3))]
        self.rng = torch.Generator().manual_seed(0)

    def rand(self, *shape):
        return torch.rand(*shape, generator=self.rng)

    def forward(self, images):
        batch = next(self.batches)
        bs, _, h, w = images.shape
        counts = torch.bincount(batch["batch_idx"], minlength=bs)
        n = int(counts.max()) + 2
        decoded = torch.zeros(bs, n, 5 + self.nc)
        protos = torch.full((bs, n, h, w), -10.0)  # full resolution: the upsampling step is then exact
        keypoints = torch.zeros(bs, n, K * 3)
        for i in range(bs):
            mine = (batch["batch_idx"] == i).nonzero().view(-1)
            for j, t in enumerate(mine.tolist()):
                box = batch["bboxes"][t] * torch.tensor([w, h, w, h])
                decoded[i, j, :4] = box + (self.rand(4) - 0.5) * 0.3 * box[2:].repeat(2)
                decoded[i, j, 4] = 0.3 + 0.7 * self.rand(1)
                cls = int(batch["cls"][t]) if self.rand(1) < 0.85 else int(self.rand(1) * self.nc)
                decoded[i, j, 5 + cls] = 1.0
                shift = int(self.rand(1) * 4)
                protos[i, j] = torch.where(batch["masks"][t].roll(shift, 1) > 0, 10.0, -10.0)
                kp = batch["keypoints"][t].clone()
                kp[:, :2] = kp[:, :2] * torch.tensor([w, h]) + torch.randn(K, 2, generator=self.rng) * box[2:] * 0.05
                kp[:, 2] = 0.9
                keypoints[i, j] = kp.view(-1)
            for j in range(len(mine), n):  # false positives
                decoded[i, j, :4] = self.rand(4) * torch.tensor([w, h, w / 3, h / 3]) + 4
                decoded[i, j, 4] = 0.5 * self.rand(1)
                decoded[i, j, 5 + int(self.rand(1) * self.nc)] = 1.0
        coefficients = torch.eye(n).expand(bs, n, n)
        return {"det": (decoded, []), "seg": (coefficients, protos), "kpt": (keypoints, [])}


def coco_ground_truth(labels, masks_by_file):
    from pycocotools.coco import COCO

    from yolostitch.engine.coco_records import encode_masks

    images, anns = [], []
    for lab in labels:
        rles = encode_masks(masks_by_file[lab.im_file])
        h, w = lab.shape
        image_id = int(__import__("pathlib").Path(lab.im_file).stem.split("_")[-1])
        images.append({"id": image_id, "width": w, "height": h})
        for c, (cx, cy, bw, bh), rle, kp in zip(lab.cls.tolist(), lab.bboxes.tolist(), rles, lab.keypoints):
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            points = kp.copy()
            points[:, 0] *= w
            points[:, 1] *= h
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": c, "bbox": box, "iscrowd": 0,
                         "area": box[2] * box[3] * 0.53,  # the OKS scale our YOLO-format labels use
                         "segmentation": rle,
                         "keypoints": points.reshape(-1).tolist(), "num_keypoints": int((kp[:, 2] > 0).sum())})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i} for i in range(5)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def cocoeval(gt, records, kind, sigmas=None):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(json.loads(json.dumps(records))), kind)
        if sigmas is not None:
            e.params.kpt_oks_sigmas = np.asarray(sigmas)
        if kind == "segm":  # segm areas come from the masks; score every size as our metric does
            e.params.areaRng = [[0, 1e10]] * 4
        e.evaluate(), e.accumulate(), e.summarize()
    return e.stats[1], e.stats[0]


def test_mask_and_pose_map_of_the_pipeline_agree_with_pycocotools(tmp_path):
    root = generate_shapes(tmp_path / "shapes", n_train=0, n_val=24, imgsz=IMGSZ)
    labels = scan_split([root / "images" / "val"], 5, [K, 3]).labels
    loader = val_loader(labels, IMGSZ, 8, 32, [K, 3], workers=0, use_masks=True)
    batches = list(loader)
    oracle = Oracle(batches, nc=5)
    masks_by_file = {f: unletterbox_masks(b["masks"][b["batch_idx"] == i].bool(), b["ori_shape"][i], b["ratio_pad"][i])
                     for b in batches for i, f in enumerate(b["im_file"])}
    records = []

    def on_image(im_file, kept):
        from yolostitch.engine.coco_records import encode_masks, keypoint_records

        image_id = int(__import__("pathlib").Path(im_file).stem.split("_")[-1])
        recs = keypoint_records(image_id, kept["keypoints"], kept["conf"], kept["cls"], kept["boxes"])
        for r, rle in zip(recs, encode_masks(kept["masks"])):
            r["segmentation"] = rle
        records.extend(recs)

    results = evaluate(oracle, loader, torch.device("cpu"), on_image=on_image)
    gt = coco_ground_truth(labels, masks_by_file)
    mask50, mask = cocoeval(gt, [{k: v for k, v in r.items() if k != "keypoints"} for r in records], "segm")
    pose50, pose = cocoeval(gt, records, "keypoints", sigmas=np.full(K, 1 / K))
    ours = results["mask"], results["pose"]
    print("ours mask", ours[0]["coco_map50"], ours[0]["coco_map"], "coco", mask50, mask)
    print("ours pose", ours[1]["coco_map50"], ours[1]["coco_map"], "coco", pose50, pose)
    assert 0.2 < mask < 0.95 and 0.2 < pose < 0.95  # not a vacuous comparison
    assert ours[0]["coco_map50"] == pytest.approx(mask50, abs=0.002) and ours[0]["coco_map"] == pytest.approx(mask, abs=0.002)
    assert ours[1]["coco_map50"] == pytest.approx(pose50, abs=0.002) and ours[1]["coco_map"] == pytest.approx(pose, abs=0.002)
