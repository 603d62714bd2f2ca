"""Augmentation keeps boxes, masks and keypoints consistent, whatever the pipeline draws (hypothesis)."""

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolostitch.data.dataset import MultiTaskDataset, collate
from yolostitch.data.labels import ImageLabels

K = 4
FLIP_IDX = [0, 3, 2, 1]  # 0 top, 1 right, 2 bottom, 3 left


class InMemory(MultiTaskDataset):
    """Images drawn from the labels' own shapes, without disk I/O."""

    def load_image(self, index):
        h0, w0 = self.labels[index].shape
        r = self.imgsz / max(h0, w0)
        h, w = round(h0 * r), round(w0 * r)
        rng = np.random.default_rng(index)
        return rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (h0, w0), (h, w)


def instance(draw_, mask: bool, kpts: bool):
    """A random convex polygon with its box and 4 extreme-point keypoints (normalised)."""
    cx, cy = draw_(st.floats(0.15, 0.85)), draw_(st.floats(0.15, 0.85))
    r = draw_(st.floats(0.03, 0.14))
    angles = np.sort(np.array(draw_(st.lists(st.floats(0, 2 * np.pi), min_size=3, max_size=10))))
    poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).clip(0, 1).astype(np.float32)
    lo, hi = poly.min(0), poly.max(0)
    box = np.concatenate([(lo + hi) / 2, np.maximum(hi - lo, 1e-3)]).astype(np.float32)
    k = np.zeros((K, 3), np.float32)
    if kpts:
        extremes = [poly[poly[:, 1].argmin()], poly[poly[:, 0].argmax()], poly[poly[:, 1].argmax()],
                    poly[poly[:, 0].argmin()]]
        k[:, :2], k[:, 2] = extremes, 2
    return poly if mask else np.zeros((0, 2), np.float32), box, k


@st.composite
def image_labels(draw_, index):
    h, w = draw_(st.integers(40, 120)), draw_(st.integers(40, 120))
    n = draw_(st.integers(0, 5))
    parts = [instance(draw_, draw_(st.booleans()), draw_(st.booleans())) for _ in range(n)]
    return ImageLabels(f"mem{index}", (h, w), np.array([draw_(st.integers(0, 2)) for _ in range(n)], np.int64),
                       np.stack([p[1] for p in parts]) if n else np.zeros((0, 4), np.float32),
                       [p[0] for p in parts], np.stack([p[2] for p in parts]) if n else np.zeros((0, K, 3), np.float32))


hyps = st.fixed_dictionaries({
    "mosaic": st.sampled_from([0.0, 1.0]), "mixup": st.sampled_from([0.0, 0.5]),
    "copy_paste": st.sampled_from([0.0, 0.5]), "degrees": st.floats(0, 45), "translate": st.floats(0, 0.3),
    "scale": st.floats(0, 0.6), "shear": st.floats(0, 10), "perspective": st.sampled_from([0.0, 0.0005]),
    "fliplr": st.sampled_from([0.0, 0.5, 1.0]), "flipud": st.sampled_from([0.0, 0.5]),
})


def check_sample(s, imgsz):
    _, h, w = s["img"].shape
    assert (h, w) == (imgsz, imgsz)
    boxes = s["bboxes"]
    assert ((boxes[:, :2] - boxes[:, 2:] / 2) >= -1e-4).all() and ((boxes[:, :2] + boxes[:, 2:] / 2) <= 1 + 1e-4).all()
    assert (boxes[:, 2:] > 0).all()
    r = 4  # mask_ratio
    for box, mask, real in zip(boxes, s["masks"], s["has_mask"]):
        if not real:
            assert mask.sum() == 0
            continue
        ys, xs = np.nonzero(mask.numpy())
        if len(xs) == 0:
            continue
        x1, y1 = (box[0] - box[2] / 2) * w, (box[1] - box[3] / 2) * h
        x2, y2 = (box[0] + box[2] / 2) * w, (box[1] + box[3] / 2) * h
        tol = r + 1  # one mask cell plus rounding
        assert xs.min() * r >= x1 - tol and (xs.max() + 1) * r <= x2 + tol
        assert ys.min() * r >= y1 - tol and (ys.max() + 1) * r <= y2 + tol
    kpts = s["keypoints"]
    visible = kpts[..., 2] > 0
    assert ((kpts[..., :2][visible] >= 0) & (kpts[..., :2][visible] <= 1)).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), hyp=hyps, seed=st.integers(0, 2 ** 16))
def test_any_pipeline_keeps_masks_in_boxes_and_keypoints_in_image(data, hyp, seed):
    labels = [data.draw(image_labels(i)) for i in range(4)]
    random.seed(seed)
    np.random.seed(seed)
    ds = InMemory(labels, imgsz=96, augment=True, hyp=hyp, kpt_shape=[K, 3], flip_idx=FLIP_IDX, use_masks=True)
    for i in range(len(ds)):
        check_sample(ds[i], 96)


def test_horizontal_flip_swaps_left_and_right_keypoints():
    labels = [ImageLabels("m", (100, 100), np.array([0]), np.array([[0.3, 0.5, 0.2, 0.2]], np.float32), [],
                          np.array([[[0.3, 0.4, 2], [0.4, 0.5, 2], [0.3, 0.6, 2], [0.2, 0.5, 2]]], np.float32))]
    hyp = {"mosaic": 0.0, "fliplr": 1.0, "translate": 0.0, "scale": 0.0, "hsv_h": 0, "hsv_s": 0, "hsv_v": 0}
    s = InMemory(labels, imgsz=100, augment=True, hyp=hyp, kpt_shape=[K, 3], flip_idx=FLIP_IDX)[0]
    k = s["keypoints"][0]
    assert k[1, 0] > k[3, 0]  # index 1 is still the right-most point after the mirror
    assert s["bboxes"][0, 0] == pytest.approx(0.7, abs=0.01)


def test_partial_labels_survive_mosaic():
    """Box-only instances keep no mask and no keypoints through the pipeline; others keep theirs."""
    poly = np.array([[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]], np.float32)
    full = ImageLabels("a", (80, 80), np.array([1]), np.array([[0.5, 0.5, 0.2, 0.2]], np.float32), [poly],
                       np.array([[[0.5, 0.4, 2], [0.6, 0.5, 2], [0.5, 0.6, 2], [0.4, 0.5, 2]]], np.float32))
    box_only = ImageLabels("b", (80, 80), np.array([2]), np.array([[0.5, 0.5, 0.3, 0.3]], np.float32), [],
                           np.zeros((1, K, 3), np.float32))
    random.seed(0)
    ds = InMemory([full, box_only] * 2, imgsz=128, augment=True, kpt_shape=[K, 3], flip_idx=FLIP_IDX,
                  hyp={"scale": 0.0, "translate": 0.0})
    batch = collate([ds[i] for i in range(4)])
    for c, real, mask, k in zip(batch["cls"], batch["has_mask"], batch["masks"], batch["keypoints"]):
        assert bool(real) == (c == 1) == bool(mask.any()) == bool((k[:, 2] > 0).any())


def test_validation_letterbox_and_rect_batches():
    labels = [ImageLabels(f"m{i}", shape, np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
              for i, shape in enumerate([(480, 640), (640, 480), (400, 640), (500, 500)])]
    square = InMemory(labels, imgsz=64)
    assert all(square[i]["img"].shape == (3, 64, 64) for i in range(4))
    rect = InMemory(labels, imgsz=64, rect=True, batch_size=2, stride=32)
    shapes = [tuple(rect[i]["img"].shape[1:]) for i in range(4)]
    assert shapes[0] == shapes[1] and shapes[0][0] < shapes[0][1]  # the two wide images share a wide shape
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in shapes)
    assert torch.is_tensor(rect[0]["bboxes"])


def test_vectorised_perspective_equals_ultralytics():
    from ultralytics.data.augment import RandomPerspective

    from yolostitch.data.augment import Perspective

    rng = np.random.default_rng(0)
    centres = rng.uniform(-40, 140, (60, 1, 2))  # many polygons cross or leave a 100x80 image
    segments = (centres + rng.normal(0, 25, (60, 50, 2))).astype(np.float32)
    M = np.array([[0.9, 0.2, 5.0], [-0.1, 1.1, -3.0], [0.0005, 0.0002, 1.0]])
    for cls in (Perspective, RandomPerspective):
        boxes, segs = cls().apply_segments(segments.copy(), M, (100, 80))
        if cls is Perspective:
            ours = boxes, segs
    np.testing.assert_allclose(ours[0], boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours[1], segs, rtol=1e-5, atol=1e-4)


def test_resample_polygon_keeps_vertices_and_shape():
    import cv2

    from yolostitch.data.dataset import resample_polygon

    square = np.array([[10, 10], [50, 10], [50, 20], [10, 20]], np.float32)
    out = resample_polygon(square, 128)
    assert out.shape == (128, 2)
    assert all(any(np.allclose(v, p) for p in out) for v in square)  # every vertex kept
    # points lie on the outline: filling them gives back the same area
    assert cv2.contourArea(out) == pytest.approx(cv2.contourArea(square), rel=1e-4)
    long_side = out[(out[:, 1] == 10)]
    assert len(long_side) > 4 * len(out[(out[:, 0] == 50) & (out[:, 1] > 10) & (out[:, 1] < 20)])  # by length
    many = np.random.default_rng(0).random((1000, 2)).astype(np.float32)
    assert resample_polygon(many, 256).shape == (256, 2)


def test_polygon_boxes_equal_ultralytics_segment2box():
    from ultralytics.utils.ops import segment2box

    from yolostitch.data.augment import polygon_boxes

    rng = np.random.default_rng(1)
    polygons = (rng.uniform(-60, 160, (300, 1, 2)) + rng.normal(0, 40, (300, 24, 2))).astype(np.float32)
    polygons[:5] = [[[-10, -10], [110, -10], [110, 90], [-10, 90]] + [[-10, 90]] * 20]  # covers all corners
    ours = polygon_boxes(polygons, 100, 80)
    theirs = np.stack([segment2box(p, 100, 80) for p in polygons])
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_image_cache_serves_read_only_images_within_its_budget(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    labels = [ImageLabels(str(tmp_path / f"{i}.png"), (20, 30), np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
              for i in range(3)]
    ds = MultiTaskDataset(labels, imgsz=30, cache_images=True, cache_bytes=2 * 20 * 30 * 3)
    assert sorted(ds._images) == [0, 1]  # the third does not fit
    img, _, _ = ds.load_image(1)
    with pytest.raises(ValueError, match="read-only"):  # a transform writing into its input cannot change the cache
        img[:] = 255
    assert (ds.load_image(1)[0] == 40).all() and (ds.load_image(2)[0] == 80).all()


def test_disk_cache_writes_npy_beside_images_and_reads_them_back(tmp_path, caplog):
    """--cache disk, as stock: x.jpg's decoded pixels as x.npy beside it (the reference: cv2.imread of x.jpg),
    read instead of decoding again; a stale .npy (older than its image) is replaced; a read-only folder falls
    back to decoding, with one warning (next test)."""
    import os

    import cv2

    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    labels = [ImageLabels(str(tmp_path / f"{i}.jpg"), (20, 30), np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
              for i in range(2)]
    ds = MultiTaskDataset(labels, imgsz=30, cache_images="disk")
    for i in range(2):
        decoded = cv2.imread(str(tmp_path / f"{i}.jpg"))
        assert (np.load(tmp_path / f"{i}.npy") == decoded).all()
        assert (ds.load_image(i)[0] == decoded).all()
    np.save(tmp_path / "0.npy", np.zeros((20, 30, 3), np.uint8))  # the cache now disagrees with the image...
    assert (ds.load_image(0)[0] == 0).all()  # ...and is what is read
    os.utime(tmp_path / "0.npy", (1, 1))  # older than its image: stale, so written anew
    assert (ds.load_image(0)[0] == cv2.imread(str(tmp_path / "0.jpg"))).all()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no leftovers



def test_disk_cache_in_a_read_only_folder_decodes_as_usual(tmp_path, caplog, monkeypatch):
    import cv2

    from yolostitch.data import disk_cache

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(disk_cache.os, "replace", refuse)  # as a read-only folder answers (root may write anywhere)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((20, 30, 3), 7, np.uint8))
    ds = MultiTaskDataset([ImageLabels(str(tmp_path / "a.png"), (20, 30), np.zeros(0, np.int64),
                                       np.zeros((0, 4), np.float32))], imgsz=30, cache_images="disk")
    assert (ds.load_image(0)[0] == 7).all() and (ds.load_image(0)[0] == 7).all()
    assert caplog.text.count("cannot write") == 1  # one warning per folder
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".*.tmp"))


def _smooth_image(h, w, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (9, 9), 3)


@pytest.mark.parametrize("s", [0.58, 0.8, 1.0, 1.23, 1.5])
def test_scale_translate_drawn_by_resize_equals_warp_affine(s):
    """The resize shortcut samples where warpAffine does with the moved matrix: pixels within rounding, the
    translation moved by at most half a source pixel, and any other matrix left to warpAffine."""
    import cv2

    from yolostitch.data.augment import resize_crop

    img = _smooth_image(1280, 1280)
    rng = np.random.default_rng(int(s * 100))
    for _ in range(5):
        tx, ty = 320 - s * 640 + rng.uniform(-64, 64), 320 - s * 640 + rng.uniform(-64, 64)
        M = np.array([[s, 0, tx], [0, s, ty], [0, 0, 1]], np.float32)
        moved, (x0, y0, nx, ny) = resize_crop(M, img.shape[:2], (640, 640))
        assert np.abs(moved[:2, 2] - M[:2, 2]).max() <= s / 2 + 1e-4
        assert (moved[:2, :2] == M[:2, :2]).all()
        fast = cv2.resize(img[y0:y0 + ny, x0:x0 + nx], None, fx=float(M[0, 0]), fy=float(M[0, 0]))[:640, :640]
        warped = cv2.warpAffine(img, moved[:2], dsize=(640, 640), borderValue=(114, 114, 114))
        diff = np.abs(fast.astype(int) - warped.astype(int))
        assert diff.max() <= 3 and diff.mean() < 0.25, (diff.max(), diff.mean())
    rotated = np.array([[s, 0.01, 0], [-0.01, s, 0], [0, 0, 1]], np.float32)
    assert resize_crop(rotated, img.shape[:2], (640, 640)) is None
    outside = np.array([[s, 0, 100], [0, s, 0], [0, 0, 1]], np.float32)  # would sample left of the image
    assert resize_crop(outside, img.shape[:2], (640, 640)) is None


def test_resized_image_and_labels_stay_registered():
    """A white square on grey, through the default (scale + translate) affine: the box and polygon the labels
    get outline the square the image shows, to the pixel, whether resize or warpAffine drew it."""
    from ultralytics.utils.instance import Instances

    from yolostitch.data.augment import Perspective

    fast_paths = 0
    for seed in range(30):
        random.seed(seed)
        img = np.full((1280, 1280, 3), 114, np.uint8)
        img[500:700, 560:820] = 255
        square = np.array([[[560, 500], [820, 500], [820, 700], [560, 700]]], np.float32)
        labels = {"img": img, "cls": np.zeros((1, 1), np.float32),
                  "instances": Instances(np.array([[560, 500, 820, 700]], np.float32), square, None,
                                         bbox_format="xyxy", normalized=False)}
        affine = Perspective(translate=0.1, scale=0.5, size=(640, 640))
        params = affine.get_params(labels)
        fast_paths += "crop" in params
        out = affine.apply_instances(affine.apply_image(labels, params), params)
        if not len(out["instances"]):
            continue
        x1, y1, x2, y2 = out["instances"].bboxes[0]
        ys, xs = np.nonzero(out["img"][..., 0] > 200)
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1, (seed, xs.min(), xs.max(), x1, x2)
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1, (seed, ys.min(), ys.max(), y1, y2)
    assert fast_paths >= 20  # most draws take the resize path


@pytest.mark.parametrize("masks", [False, True])
def test_tiled_mosaic_gives_the_filled_mosaics_samples(masks):
    """Drawing only the sampled region of a tiled mosaic changes nothing: same pixels and labels as
    ultralytics' Mosaic filling the whole canvas, through the resize path and warpAffine's (large zoom-outs)."""
    from ultralytics.data.augment import Compose, Mosaic

    from yolostitch.data.augment import Perspective, TiledMosaic

    rng = np.random.default_rng(0)
    labels = []
    for i in range(6):
        n = int(rng.integers(1, 4))
        boxes = np.concatenate([rng.uniform(0.3, 0.7, (n, 2)), rng.uniform(0.1, 0.4, (n, 2))], 1).astype(np.float32)
        polygons = [np.array([[x - w / 2, y - h / 2], [x + w / 2, y - h / 2], [x, y + h / 2]], np.float32)
                    if masks else np.zeros((0, 2), np.float32) for x, y, w, h in boxes]
        shape = (int(rng.integers(60, 120)), int(rng.integers(60, 120)))
        labels.append(ImageLabels(f"mem{i}", shape, np.zeros(n, np.int64), boxes, polygons, None))
    dataset = InMemory(labels, imgsz=96, augment=True)
    outputs = []
    for mosaic in (Mosaic, TiledMosaic):
        pipeline = Compose([mosaic(dataset, imgsz=96, p=1.0), Perspective(translate=0.1, scale=0.5, size=(96, 96))])
        random.seed(0)
        np.random.seed(0)
        outputs.append([pipeline(dataset.get_image_and_label(i % 6)) for i in range(40)])
    for filled, tiled in zip(*outputs):
        np.testing.assert_array_equal(tiled["img"], filled["img"])
        np.testing.assert_array_equal(tiled["cls"], filled["cls"])
        np.testing.assert_array_equal(tiled["instances"].bboxes, filled["instances"].bboxes)
        np.testing.assert_array_equal(tiled["instances"].segments, filled["instances"].segments)
