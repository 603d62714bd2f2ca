"""--augment (test-time augmentation): stock's passes and merge, keypoints mirrored with flip_idx, refusals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from yolostitch import build_model
from yolostitch.engine.detector import detect
from yolostitch.engine.trainer import train
from yolostitch.engine.tta import augmented_forward, level_rows
from yolostitch.engine.validator import run_val
from yolostitch.errors import FlagError
from yolostitch.tasks import tasks_of
from yolostitch.tasks.keypoints import Keypoints
from yolostitch.weights import load_model, save_checkpoint


def test_augmented_rows_equal_stock(stock_yolo):
    """Stock's ``model(x, augment=True)`` on the same weights: same rows, same order, same clipping."""
    stock = stock_yolo.build_stock_model("yolov5n.yaml").eval()
    ours = build_model("yolov5n.yaml").eval()
    ours.load_state_dict(stock.state_dict())
    torch.manual_seed(0)
    for image in (torch.rand(1, 3, 256, 320), torch.rand(2, 3, 224, 160)):
        with torch.no_grad():
            expected = stock(image, augment=True)[0]
            got = augmented_forward(ours, image, tasks_of(ours), 32)["det"].rows
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


class _Head:
    kpt_shape = (3, 3)


def test_keypoints_scaled_back_and_mirrored_with_flip_idx():
    task = Keypoints(head=_Head())
    task.configure({"flip_idx": [0, 2, 1]})
    rows = torch.tensor([[[10.0, 20, 0.9, 30, 40, 0.8, 50, 60, 0.7]]])
    got = task.unaugment((rows, []), 0.5, 100).view(3, 3)
    # / 0.5 -> (20, 40), (60, 80), (100, 120); mirrored in a 100 px wide input -> x = 100 - x; then left <-> right
    expected = torch.tensor([[80.0, 40, 0.9], [0, 120, 0.7], [40, 80, 0.8]])
    torch.testing.assert_close(got, expected)
    assert task.unaugment((rows, []), 0.5, None).view(3, 3)[:, :2].tolist() == [[20, 40], [60, 80], [100, 120]]


def test_keypoints_without_flip_idx_refused():
    task = Keypoints(head=_Head())
    with pytest.raises(FlagError, match="flip_idx"):
        task.unaugment((torch.zeros(1, 1, 9), []), 0.83, 64)


def test_branches_share_rows_and_masks_are_refused():
    model = build_model("yolov5n-pose.yaml", nc=5, kpt_shape=[5, 3]).eval()
    model.yaml["flip_idx"] = [0, 3, 2, 1, 4]
    tasks = tasks_of(model)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        merged = augmented_forward(model, x, tasks, 32)
        plain = model(x)
    counts = level_rows(plain["det"])
    assert merged["det"].rows.shape[1] == merged["kpt"].rows.shape[1]
    # the full-size pass comes first, without its coarsest level, unchanged
    n0 = sum(counts[:-1])
    torch.testing.assert_close(merged["det"].rows[:, :n0], plain["det"].rows[:, :n0])
    torch.testing.assert_close(merged["kpt"].rows[:, :n0], plain["kpt"].rows[:, :n0])

    seg = build_model("yolov5n-seg.yaml", nc=5).eval()
    with torch.no_grad(), pytest.raises(FlagError, match="mask"):
        augmented_forward(seg, x, tasks_of(seg), 32)


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((64, 64, 3), 128, np.uint8))
    return path


def test_exported_weights_refused(image, tmp_path):
    with pytest.raises(FlagError, match="exported"):
        detect(tmp_path / "model.onnx", image, augment=True)


def test_detect_and_val_augment(options, tiny_shapes, tmp_path):
    """A keypoint model trained on data with flip_idx (and a skeleton) keeps them; val.py and detect.py --augment
    then run."""
    data = tmp_path / "data.yaml"
    data.write_text(tiny_shapes.read_text() + "skeleton: [[0, 1], [1, 2]]\n")
    train(options(cfg="yolov5n-pose.yaml", data=str(data), epochs=1, noval=True, noplots=True))
    weights = next((tmp_path / "runs").glob("*/weights/last.pt"))
    model = load_model(weights)
    assert model.yaml["flip_idx"] == [0, 3, 2, 1, 4] and model.yaml["skeleton"] == [[0, 1], [1, 2]]
    plain = run_val(weights, tiny_shapes, imgsz=64, workers=0, project=tmp_path / "val", verbose=False)
    augmented = run_val(weights, tiny_shapes, imgsz=64, workers=0, project=tmp_path / "val", verbose=False,
                        augment=True)
    assert {"box_map50", "pose_map50"} <= set(augmented) and augmented["images"] == plain["images"]
    images = tiny_shapes.parent / "images" / "val"
    results = detect(weights, images, imgsz=64, device="cpu", conf_thres=0.0, augment=True)
    assert len(results) == 4 and all(r["keypoints"].shape[1:] == (5, 3) for r in results)


def test_feature_model_refused(image, tmp_path):
    model = build_model("yolov5n-feat.yaml", nc=5)
    weights = save_checkpoint(tmp_path / "feat.pt", model)
    with pytest.raises(FlagError, match="FeatureInput"):
        detect(weights, image, augment=True, device="cpu")
