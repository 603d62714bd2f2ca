"""``--quad`` batches: images and boxes as stock's ``collate_fn4`` makes them, and masks and keypoints moved with
their boxes (training with it: tests/engine/test_train.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from yolostitch.data.quad import quad_collate

R = 4  # mask downsampling (MultiTaskDataset's mask_ratio)


def sample(rng: np.random.Generator, n: int, h: int = 32, w: int = 32) -> dict:
    """An image with ``n`` boxes, each with a mask filling the box (at 1/R) and keypoints at the box centre and
    its top-left corner, plus an unlabelled keypoint at (0, 0)."""
    img = torch.from_numpy(rng.integers(0, 255, (3, h, w), dtype=np.uint8))
    xy = rng.integers(1, 5, (n, 2)) * R  # box corners on mask pixels, so masks fill boxes exactly
    wh = rng.integers(1, 3, (n, 2)) * R
    x1, y1, bw, bh = xy[:, 0], xy[:, 1], wh[:, 0], wh[:, 1]
    boxes = torch.tensor(np.stack([(x1 + bw / 2) / w, (y1 + bh / 2) / h, bw / w, bh / h], 1), dtype=torch.float32)
    masks = torch.zeros((n, h // R, w // R), dtype=torch.uint8)
    keypoints = torch.zeros((n, 3, 3))
    for i in range(n):
        masks[i, y1[i] // R:(y1[i] + bh[i]) // R, x1[i] // R:(x1[i] + bw[i]) // R] = 1
        keypoints[i, 0] = torch.tensor([boxes[i, 0], boxes[i, 1], 2.0])
        keypoints[i, 1] = torch.tensor([x1[i] / w, y1[i] / h, 1.0])
    return {"img": img, "cls": torch.from_numpy(rng.integers(0, 5, n)), "bboxes": boxes,
            "has_mask": torch.ones(n, dtype=torch.bool), "masks": masks, "keypoints": keypoints,
            "im_file": f"im{n}.jpg", "ori_shape": (h, w), "ratio_pad": None}


@pytest.fixture()
def samples():
    rng = np.random.default_rng(0)
    return [sample(rng, n) for n in (1, 2, 0, 3, 2, 1, 1, 2)]


def test_images_and_boxes_are_stocks(samples, stock_yolo):
    """Seeded alike, ours and stock's collate_fn4 choose the same (upscale or tile) and give the same images and
    box labels, on several seeds (both choices occur)."""
    from yolov5.utils.dataloaders import LoadImagesAndLabels

    stock_batch = [(s["img"], torch.cat([torch.zeros(len(s["cls"]), 1), s["cls"][:, None].float(), s["bboxes"]], 1),
                    s["im_file"], None) for s in samples]
    choices = set()
    for seed in range(6):
        random.seed(seed)
        images, labels, _, _ = LoadImagesAndLabels.collate_fn4(stock_batch)
        random.seed(seed)
        ours = quad_collate(samples)
        assert torch.equal(ours["img"], images), seed
        assert torch.equal(ours["batch_idx"], labels[:, 0].long())
        assert torch.equal(ours["cls"], labels[:, 1].long())
        assert torch.allclose(ours["bboxes"], labels[:, 2:6])
        choices.add(len(ours["cls"]))  # groups of 1 + 2 + 0 + 3 and 2 + 1 + 1 + 2 instances: 12 if both tiled
    assert 12 in choices and len(choices) > 1  # tiles and upscales both compared


@pytest.mark.parametrize("upscale", [True, False])
def test_masks_and_keypoints_follow_their_boxes(samples, monkeypatch, upscale):
    monkeypatch.setattr(random, "random", lambda: 0.0 if upscale else 1.0)
    batch = quad_collate(samples)
    assert batch["img"].shape == (2, 3, 64, 64)
    assert batch["masks"].shape[1:] == (64 // R, 64 // R)
    for box, mask, points in zip(batch["bboxes"], batch["masks"], batch["keypoints"]):
        x, y, w, h = (box * 64).tolist()
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert (xs.min() * R, (xs.max() + 1) * R, ys.min() * R, (ys.max() + 1) * R) == \
            pytest.approx((x - w / 2, x + w / 2, y - h / 2, y + h / 2)), "mask and box part"
        assert points[0, :2].tolist() == pytest.approx(box[:2].tolist())  # centre keypoint at the box centre
        assert (points[1, :2] * 64).tolist() == pytest.approx([x - w / 2, y - h / 2])  # corner at the corner
        assert points[2].tolist() == [0, 0, 0]  # an unlabelled keypoint keeps its placeholder


def test_leftover_samples_are_upscaled_not_dropped(samples, monkeypatch):
    monkeypatch.setattr(random, "random", lambda: 1.0)  # groups tiled
    batch = quad_collate(samples[:6])
    assert batch["img"].shape == (3, 3, 64, 64)  # one tiled group of 4, then samples 5 and 6 on their own
    assert batch["batch_idx"].tolist() == [0] * 6 + [1] * 2 + [2]

