"""A checkpoint written before the task interface (commit 3ecad61) still loads, validates and detects to the
figures that code gave.

The checkpoint is rebuilt here exactly as that code wrote it (its keys, format version 1, a state dict whose
names and shapes did not change): a four-head model (detection, masks, keypoints, image classes) seeded with
``torch.manual_seed(0)``, its conv weights x4 so that outputs differ per image. The expected figures were
measured by running ``run_val`` and ``detect`` of commit 3ecad61 on that checkpoint and the ``tiny_shapes``
data, in fp32.
"""

import json

import pytest
import torch

from yolostitch.engine.detector import detect
from yolostitch.engine.validator import run_val
from yolostitch.models import build_model

CONFIG = {
    "nc": 5, "kpt_shape": [5, 3], "depth_multiple": 0.33, "width_multiple": 0.0625,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C3", [128]],
                 [-1, 1, "Conv", [256, 3, 2]], [-1, 1, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                 [-1, 1, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 1, "C3", [1024]],
                 [-1, 1, "SPPF", [1024, 5]]],
    "head": [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
             [-1, 1, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
             [[-1, 4], 1, "Concat", [1]], [-1, 1, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
             [[-1, 14], 1, "Concat", [1]], [-1, 1, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
             [[-1, 10], 1, "Concat", [1]], [-1, 1, "C3", [1024, False]],
             [[17, 20, 23], 1, "Detect", ["nc", "anchors"]], [[17, 20, 23], 1, "Segment", ["anchors", 8, 64]],
             [[17, 20, 23], 1, "Keypoints", ["anchors", "kpt_shape"]], [[23], 1, "Classify", ["nc"]]],
}
NAMES = {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "hexagon"}

# measured with commit 3ecad61 (before the task interface)
METRICS = {"box_precision": 0.0, "box_recall": 0.0, "box_map50": 0.0, "box_map": 0.0, "mask_precision": 0.0,
           "mask_recall": 0.0, "mask_map50": 0.0, "mask_map": 0.0, "pose_precision": 0.0, "pose_recall": 0.0,
           "pose_map50": 0.0, "pose_map": 0.0, "cls_accuracy": 0.5, "cls_exact": 0.0, "box_map50_coco": 0.0,
           "box_map_coco": 0.0, "images": 4, "instances": 17, "speed_ms_per_image": None, "per_class": None,
           "skipped": [], "precision": "fp32 (--amp off)", "mask_map50_coco": 0.0, "mask_map_coco": 0.0,
           "pose_map50_coco": 0.0, "pose_map_coco": 0.0}
# per val image: detections kept at conf 0.001, and sums of boxes, classes, mask pixels, keypoint values
PREDICTIONS = [(148, 18066.0, 106.0, 1938.0, 35547.7391938163), (148, 18034.0, 106.0, 2001.0, 35420.45671540127),
               (146, 17686.0, 104.0, 3174.0, 34756.928607117865), (151, 18206.15061187744, 104.0, 2550.0, 35805.50439170897)]


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(CONFIG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 4:
                p.mul_(4.0)
    state = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("old") / "old.pt"
    torch.save({"format": "yolostitch", "format_version": 1, "config": model.yaml, "names": NAMES, "model": state,
                "epoch": 0}, path)
    return path


def test_an_old_checkpoint_validates_to_the_figures_it_gave_before(old_checkpoint, tiny_shapes, tmp_path):
    metrics = run_val(old_checkpoint, tiny_shapes, imgsz=64, batch_size=4, workers=0, project=tmp_path, name="val",
                      amp="off", verbose=False)
    written = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert list(written) == list(METRICS)  # the same keys, in the same order
    for key, value in METRICS.items():
        if value is not None:
            assert metrics[key] == pytest.approx(value, abs=1e-9), key


def test_an_old_checkpoint_detects_what_it_detected_before(old_checkpoint, tiny_shapes):
    results = detect(old_checkpoint, tiny_shapes.parent / "images" / "val", imgsz=64, conf_thres=0.001, amp="off")
    found = [(len(r["cls"]), float(r["boxes"].double().sum()), float(r["cls"].double().sum()),
              float(r["masks"].double().sum()), float(r["keypoints"].double().sum())) for r in results]
    assert [f[0] for f in found] == [p[0] for p in PREDICTIONS]
    for got, want in zip(found, PREDICTIONS):
        assert got[1:] == pytest.approx(want[1:], rel=1e-6)
    assert all(r["image_classes"].shape == (5,) for r in results)
