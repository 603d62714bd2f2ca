"""COCO JSON -> ImageLabels: boxes, class mapping, polygons (parts, RLE), keypoints, problems."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils  # a declared dependency: no importorskip, a missing one should fail
import pytest

from yolostitch.data.coco import coco_names, join_parts, read_coco

KPT_SHAPE = [3, 3]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def blob_mask() -> np.ndarray:
    mask = np.zeros((100, 100), np.uint8)
    cv2.circle(mask, (40, 50), 20, 1, -1)
    return mask


def two_blob_mask() -> np.ndarray:
    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 10:40] = 1
    cv2.circle(mask, (70, 70), 15, 1, -1)
    return mask


def coco_dict() -> dict:
    part1 = [20, 10, 40, 10, 40, 40, 20, 40]
    part2 = [50, 10, 60, 10, 60, 40, 50, 40]
    crowd_rle = uncompressed_rle(np.ones((100, 200), np.uint8))
    return {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 200, "height": 100},
            {"id": 20, "file_name": "b.jpg", "width": 100, "height": 100},
            {"id": 30, "file_name": "c.jpg", "width": 64, "height": 48},  # background
            {"id": 40, "file_name": "d.jpg", "width": 100, "height": 50},
            {"id": 50, "file_name": "e.jpg"},  # no width/height: skipped with its annotations
        ],
        "categories": [{"id": 17, "name": "cat"}, {"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [20, 10, 40, 30], "segmentation": [part1, part2],
             "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 17, "bbox": [180, 90, 40, 20]},  # clipped, no polygon
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [10, 10, 0, 5]},  # zero width
            {"id": 4, "image_id": 10, "category_id": 3, "bbox": [250, 10, 10, 10]},  # outside the image
            {"id": 5, "image_id": 999, "category_id": 3, "bbox": [0, 0, 10, 10]},  # unknown image
            {"id": 6, "image_id": 10, "category_id": 5, "bbox": [0, 0, 10, 10]},  # unknown category
            {"id": 7, "image_id": 10, "category_id": 1, "bbox": [0, 0, 200, 100], "segmentation": crowd_rle,
             "iscrowd": 1},
            {"id": 8, "image_id": 10, "category_id": 1, "bbox": [0, 0, 20, 10], "iscrowd": 1},
            {"id": 9, "image_id": 20, "category_id": 17, "bbox": [20, 30, 41, 41],
             "segmentation": uncompressed_rle(blob_mask())},
            {"id": 11, "image_id": 20, "category_id": 1, "bbox": [10, 10, 76, 76],
             "segmentation": compressed_rle(two_blob_mask())},
            {"id": 12, "image_id": 40, "category_id": 1, "bbox": [5, 5, 60, 40],
             "keypoints": [10, 20, 2, 33, 44, 0, 50, 25, 1], "num_keypoints": 2},
            {"id": 13, "image_id": 40, "category_id": 1, "bbox": [5, 5, 60, 40], "keypoints": [10, 20, 2, 0, 0, 0]},
            {"id": 14, "image_id": 40, "category_id": 1, "bbox": [5, 5, 60, 40]},  # no keypoints: partial
            {"id": 15, "image_id": 40, "category_id": 1, "bbox": "10 10 5 5"},  # ill-typed
            {"id": 16, "category_id": 1, "bbox": [0, 0, 5, 5]},  # no image_id
            {"id": 17, "image_id": 40, "category_id": 1, "bbox": [5, 5, 10, 10], "segmentation": "oops",
             "keypoints": [1, 1, 7, 0, 0, 0, 0, 0, 0]},  # kept, without polygon and keypoints
            {"id": 18, "image_id": 50, "category_id": 1, "bbox": [0, 0, 5, 5]},  # its image was skipped
            ["not", "an", "object"],
        ],
    }


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    (root / "images").mkdir()
    (root / "images" / "a.jpg").write_bytes(b"")  # only a.jpg exists: found under ../images
    path = root / "annotations" / "instances.json"
    path.write_text(json.dumps(coco_dict()))
    return path


@pytest.fixture(scope="module")
def split(coco_file):
    return read_coco(coco_file, kpt_shape=KPT_SHAPE)


def labels_of(split, image_id):
    return split.labels[split.image_ids.index(image_id)]


def rasterise(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [(polygon * (width, height)).astype(np.int32)], 1)
    return canvas


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_images_names_and_ids(split, coco_file):
    assert split.image_ids == [10, 20, 30, 40]
    assert split.names == {0: "person", 1: "car", 2: "cat"}
    assert split.category_ids == [1, 3, 17]
    root = coco_file.parent.parent
    assert split.labels[0].im_file == str(root / "images" / "a.jpg")
    assert split.labels[1].im_file == str(root / "annotations" / "b.jpg")  # none exists: first candidate
    assert [lb.shape for lb in split.labels] == [(100, 200), (100, 100), (48, 64), (50, 100)]


def test_images_dir(coco_file, tmp_path):
    split = read_coco(str(coco_file), images_dir=tmp_path / "imgs")
    assert split.labels[2].im_file == str(tmp_path / "imgs" / "c.jpg")
    assert split.labels[3].keypoints is None  # no kpt_shape: keypoints ignored


def test_boxes_and_classes(split):
    a = labels_of(split, 10)
    assert a.cls.tolist() == [1, 2]
    np.testing.assert_allclose(a.bboxes, [[0.2, 0.25, 0.2, 0.3], [0.95, 0.95, 0.1, 0.1]], atol=1e-6)
    assert a.bboxes.dtype == np.float32 and a.cls.dtype == np.int64
    assert a.segments[1].shape == (0, 2)  # no segmentation: a partial label


def test_background_image(split):
    bg = labels_of(split, 30)
    assert len(bg) == 0 and bg.bboxes.shape == (0, 4) and bg.keypoints.shape == (0, 3, 3)


def test_two_part_polygon_is_joined(split):
    polygon = labels_of(split, 10).segments[0]
    pixels = [[20, 10], [40, 10], [50, 10], [60, 10], [60, 40], [50, 40], [50, 10], [40, 10], [40, 40], [20, 40]]
    np.testing.assert_allclose(polygon, np.array(pixels) / (200, 100), atol=1e-6)
    filled = rasterise(polygon, 100, 200)
    assert filled[15:40, 21:40].all() and filled[15:40, 51:60].all()  # both parts covered
    assert not filled[15:40, 42:49].any()  # nothing between them (the bridge has no area)


@pytest.mark.parametrize("index, mask", [(0, blob_mask()), (1, two_blob_mask())], ids=["uncompressed", "compressed"])
def test_rle_polygon_covers_mask(split, index, mask):
    b = labels_of(split, 20)
    assert b.cls.tolist() == [2, 0]
    polygon = b.segments[index]
    assert polygon.ndim == 2 and polygon.shape[1] == 2 and len(polygon) >= 3
    assert iou(rasterise(polygon, 100, 100), mask) >= 0.9


def test_keypoints(split):
    d = labels_of(split, 40)
    assert d.keypoints.shape == (4, 3, 3) and d.keypoints.dtype == np.float32
    np.testing.assert_allclose(d.keypoints[0], [[0.1, 0.4, 2], [0, 0, 0], [0.5, 0.5, 1]], atol=1e-6)
    assert not d.keypoints[1:].any()  # wrong count, absent, bad visibility: no keypoints
    assert d.has_keypoints.tolist() == [True, False, False, False]
    assert len(d.segments[3]) == 0  # ill-typed segmentation: kept without a polygon


def test_problems(split, coco_file):
    assert {p.file for p in split.problems} == {str(coco_file)}
    reasons = [p.reason for p in split.problems]

    def one(*words):
        hits = [r for r in reasons if all(w in r for w in words)]
        assert len(hits) == 1, (words, reasons)

    one("images[4]", "width")
    one("annotation 3 ", "no area")
    one("annotation 4 ", "no area")
    one("annotation 5:", "unknown image_id 999")
    one("annotation 6 ", "unknown category_id 5")
    one("2 crowd annotation")
    one("annotation 13", "2 keypoints", "kpt_shape has 3")
    one("annotation 15 ", "bbox")
    one("annotation 16:", "unknown image_id None")
    one("annotation 17 ", "segmentation")
    one("annotation 17 ", "visibility")
    one("annotations[17]", "not an object")
    one("1 annotation(s) of skipped image")
    assert len(reasons) == 13


def test_join_parts_nearest_first():
    far = np.array([[100, 0], [101, 0], [101, 1]], float)
    near = np.array([[3, 0], [4, 0], [4, 1]], float)
    base = np.array([[0, 0], [1, 0], [1, 1]], float)
    joined = join_parts([base, far, near])
    assert len(joined) == 3 * 3 + 2 * 2
    assert {tuple(p) for p in joined} == {tuple(p) for p in np.concatenate([base, far, near])}
    steps = np.linalg.norm(np.diff(np.vstack([joined, joined[:1]]), axis=0), axis=1)
    assert steps.max() == pytest.approx(96)  # far is bridged to near (96), not to base (99)


def test_coco_names(coco_file, tmp_path):
    assert coco_names(coco_file) == {0: "person", 1: "car", 2: "cat"}
    nested = {"info": {"categories": [{"id": 9, "name": "x"}]}, "images": [],
              "categories": [{"id": 4, "name": "b"}, {"id": 2, "name": "a"}]}
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(nested))
    assert coco_names(path) == {0: "a", 1: "b"}


def test_not_coco_raises(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        read_coco(path)


def test_malformed_values_are_reported_not_raised(tmp_path):
    square = [10, 10, 30, 10, 30, 30, 10, 30]
    bad_rle = {"size": [40, 40], "counts": [5, 10, 3]}  # does not add up to 40 * 40
    data = {
        "images": [{"id": 1, "file_name": "x.jpg", "width": 40, "height": 40}, "junk"],
        "categories": [{"id": 7, "name": "a"}, {"id": 7, "name": "dup"}, {"name": "no id"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "segmentation": [square],
             "keypoints": [20, 20, 2, 5, 5, None]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "segmentation": [[1, "a", 3, 4, 5, 6]],
             "keypoints": [20, 20, 2, 50, 20, 2]},  # second point far outside: unlabelled
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "segmentation": bad_rle},
            {"id": 4, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20],
             "segmentation": {"size": [40, 40], "counts": "not rle"}},
            {"id": 5, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "segmentation": [[0, 0, 5, 5, 9, 9]]},
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    split = read_coco(path, kpt_shape=[2, 3])
    x = split.labels[0]
    assert split.names == {0: "a"} and len(x) == 5
    np.testing.assert_allclose(x.segments[0], np.array(square).reshape(-1, 2) / 40)
    assert [len(s) for s in x.segments[1:]] == [0, 0, 0, 0]  # malformed, undecodable, collinear
    assert not x.keypoints[0].any()  # None is not a number
    np.testing.assert_allclose(x.keypoints[1], [[0.5, 0.5, 2], [0, 0, 0]])
    reasons = " | ".join(p.reason for p in split.problems)
    for words in ("images[1]", "duplicate category id 7", "categories[2]", "annotation 1 ", "annotation 2 ",
                  "annotation 3 ", "annotation 4 "):
        assert words in reasons
    assert "annotation 5" not in reasons  # a degenerate polygon is a partial label, not a problem
    assert len(split.problems) == 7
