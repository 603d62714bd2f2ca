"""Our letterbox (``ops.letterbox`` and the dataset's ``LetterboxLabels``) against ultralytics' ``LetterBox``, the
transform the data pipeline used before: same image bytes, same moved labels, same ``ratio_pad``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ultralytics.data.augment import LetterBox
from ultralytics.utils.instance import Instances

from yolostitch.data.letterbox import LetterboxLabels
from yolostitch.ops.letterbox import letterbox

# (h, w) of the image the dataset hands over (already resized so its long side is about imgsz, or smaller),
# target, rect-batch shape or None, scaleup. Odd paddings in both directions, square and rect targets.
CASES = [
    ((48, 64), 64, None, False),     # 16 rows of padding, 8 above
    ((61, 64), 64, None, False),     # 3 rows: the odd one below
    ((64, 37), 64, None, False),     # 27 columns: the odd one on the right
    ((100, 173), 64, None, False),   # bigger than the target: resized down, then padded
    ((30, 50), 64, None, False),     # smaller, never enlarged (validation)
    ((30, 50), 64, None, True),      # smaller, enlarged
    ((47, 64), 64, (64, 96), False),  # a rect batch's shape wider than the image
    ((64, 45), 64, (96, 64), False),  # ... and taller
    ((63, 128), 128, (96, 128), True),  # rect with scaleup, odd rows
    ((1, 300), 64, None, False),     # a thin image keeps one pixel row
]


def _labels(shape, rect_shape, seed: int) -> dict:
    """A label dict as the dataset builds it: random image, two instances with box, polygon and keypoints."""
    rng = np.random.default_rng(seed)
    h, w = shape
    boxes = np.array([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.5, 0.2]], np.float32)
    segments = rng.uniform(0.05, 0.95, (2, 16, 2)).astype(np.float32)
    keypoints = np.concatenate([rng.uniform(0, 1, (2, 5, 2)), rng.integers(0, 3, (2, 5, 1))], 2).astype(np.float32)
    labels = {"img": rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "im_file": "x.jpg", "ori_shape": (h * 3, w * 3),
              "resized_shape": (h, w), "ratio_pad": (1 / 3, 1 / 3), "cls": np.array([[0, 1], [2, 0]], np.float32),
              "instances": Instances(boxes, segments, keypoints, bbox_format="xywh", normalized=True)}
    if rect_shape is not None:
        labels["rect_shape"] = rect_shape
    return labels


@pytest.mark.parametrize("shape, imgsz, rect_shape, scaleup", CASES)
def test_dataset_letterbox_equals_ultralytics(shape, imgsz, rect_shape, scaleup):
    labels = _labels(shape, rect_shape, seed=shape[0] * 1000 + shape[1])
    ours = LetterboxLabels(imgsz, scaleup=scaleup)(copy.deepcopy(labels))
    theirs = LetterBox(new_shape=(imgsz, imgsz), auto=False, scaleup=scaleup)(copy.deepcopy(labels))
    assert ours["img"].dtype == theirs["img"].dtype and ours["img"].shape == theirs["img"].shape
    assert ours["img"].tobytes() == theirs["img"].tobytes()
    assert ours["ratio_pad"] == theirs["ratio_pad"]
    assert [type(v) for v in ours["ratio_pad"][1]] == [type(v) for v in theirs["ratio_pad"][1]] == [int, int]
    assert ours["resized_shape"] == theirs["resized_shape"] and "rect_shape" not in ours
    a, b = ours["instances"], theirs["instances"]
    assert a.normalized == b.normalized and a._bboxes.format == b._bboxes.format
    for mine, ref in ((a.bboxes, b.bboxes), (a.segments, b.segments), (a.keypoints, b.keypoints)):
        assert mine.dtype == ref.dtype and np.array_equal(mine, ref)
    assert np.array_equal(ours["cls"], theirs["cls"])


@pytest.mark.parametrize("shape", [(60, 100), (100, 173), (61, 61), (37, 250), (250, 37), (480, 640), (3, 500)])
@pytest.mark.parametrize("imgsz, stride", [(128, 32), (96, 32), (640, 64)])
def test_inference_letterbox_equals_ultralytics_auto(shape, imgsz, stride):
    """detect's rectangular letterbox (scale up, keep only the padding beyond a stride multiple)."""
    image = np.random.default_rng(shape[0]).integers(0, 255, (*shape, 3), dtype=np.uint8)
    padded, plan = letterbox(image, imgsz, stride, auto=True)
    reference = LetterBox(new_shape=(imgsz, imgsz), auto=True, stride=stride)(image=image.copy())
    assert padded.tobytes() == reference.tobytes() and padded.shape == reference.shape
    assert padded.shape[:2] == plan.shape and all(s % stride == 0 for s in plan.shape)
    params = LetterBox(new_shape=(imgsz, imgsz), auto=True, stride=stride).get_params({"img": image})
    assert plan.gain == params["ratio"][0]
    assert plan.edges == (params["top"], params["bottom"], params["left"], params["right"])
