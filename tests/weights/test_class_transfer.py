"""train.py --weights with class-name matching: the data's classes that the checkpoint also names start with the
checkpoint's scores for them; the others, and every class with --no-class-transfer, keep their fresh init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolostitch import build_model
from yolostitch.data.config import DataConfig
from yolostitch.engine.trainer import TrainOptions, _build
from yolostitch.weights import match_class_names, save_checkpoint

COCO_HEAD = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
             "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog"]


def _data(names: list[str]) -> DataConfig:
    return DataConfig(Path("."), {}, dict(enumerate(names)), source="test-data.yaml")


def _raw_maps(model, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.eval()(x)["det"][1]  # per level (bs, na, ny, nx, 5 + nc), before any sigmoid


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """An 80-class model with random weights everywhere (BN statistics too), saved with COCO-like names."""
    torch.manual_seed(1)
    model = build_model("yolov5n.yaml", nc=80)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.is_floating_point() and t.dim() > 0 and not k.endswith("anchors"):
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if t.dim() == 1 else 0.0))
    model.names = dict(enumerate(COCO_HEAD + [f"thing{i}" for i in range(80 - len(COCO_HEAD))]))
    return save_checkpoint(tmp_path_factory.mktemp("src") / "coco80.pt", model.eval()), model.eval()


def _target(path: Path, names: list[str], class_transfer: bool = True, seed: int = 7):
    torch.manual_seed(seed)  # the same fresh initialisation for every call with this seed
    return _build(TrainOptions(cfg="yolov5n.yaml", weights=str(path), class_transfer=class_transfer), _data(names),
                  None)


def test_matched_classes_score_as_in_the_checkpoint_the_others_stay_fresh(source):
    path, reference = source
    names = ["Dog", "unicorn", "person"]  # case differs; 'unicorn' is not a COCO class
    model = _target(path, names)
    fresh = _target(path, names, class_transfer=False)  # same seed: what every class row was before the copy
    assert match_class_names(names, reference.names) == {0: 16, 2: 0}
    x = torch.rand(2, 3, 96, 128)
    for mine, theirs, before in zip(_raw_maps(model, x), _raw_maps(reference, x), _raw_maps(fresh, x)):
        assert mine.shape[-1] == 5 + 3 and theirs.shape[-1] == 85
        torch.testing.assert_close(mine[..., :5], theirs[..., :5])  # box and objectness, every anchor
        torch.testing.assert_close(mine[..., 5], theirs[..., 5 + 16])  # dog
        torch.testing.assert_close(mine[..., 7], theirs[..., 5 + 0])  # person
        torch.testing.assert_close(mine[..., 6], before[..., 6])  # unicorn: its fresh rows
    assert "classes matched: Dog, person" in model.init_note


def test_no_class_transfer_keeps_every_class_row_fresh(source):
    path, reference = source
    off = _target(path, ["dog", "person"], class_transfer=False)
    torch.manual_seed(7)
    scratch = build_model("yolov5n.yaml", nc=2)  # the fresh init the flag-off model's Detect class rows keep
    index = off.heads["det"]
    for level in range(3):
        w = off.state_dict()[f"model.{index}.m.{level}.weight"].view(3, 7, -1)
        w0 = scratch.state_dict()[f"model.{index}.m.{level}.weight"].view(3, 7, -1)
        src = reference.state_dict()[f"model.{index}.m.{level}.weight"].view(3, 85, -1)
        torch.testing.assert_close(w[:, 5:], w0[:, 5:])
        torch.testing.assert_close(w[:, :5], src[:, :5])  # box/objectness still transfer
        assert not torch.allclose(w[:, 5], src[:, 5 + 16]) and not torch.allclose(w[:, 6], src[:, 5])
    x = torch.rand(1, 3, 64, 64)
    for mine, theirs in zip(_raw_maps(off, x), _raw_maps(reference, x)):
        assert not torch.allclose(mine[..., 6], theirs[..., 5])
    assert "classes matched" not in off.init_note and "--no-class-transfer" in off.init_note


def test_same_classes_in_another_order_are_remapped_and_no_common_name_is_stock_transfer(source):
    path, reference = source
    swapped = _target(path, ["bicycle", "person"] + COCO_HEAD[2:] + [f"thing{i}" for i in range(80 - len(COCO_HEAD))])
    x = torch.rand(1, 3, 64, 64)
    for mine, theirs in zip(_raw_maps(swapped, x), _raw_maps(reference, x)):
        torch.testing.assert_close(mine[..., 5], theirs[..., 6])
        torch.testing.assert_close(mine[..., 6], theirs[..., 5])
        torch.testing.assert_close(mine[..., 7:], theirs[..., 7:])
    # 80 classes, none named as in the checkpoint: stock's whole-tensor copy, by index
    other = _target(path, [f"other{i}" for i in range(80)])
    torch.testing.assert_close(_raw_maps(other, x)[0], _raw_maps(reference, x)[0])
    assert "classes matched" not in other.init_note


def test_person_model_from_yolov5n_scores_persons_as_yolov5n(shared_weights, stock_yolo, tmp_path):
    """A 1-class `person` model initialised from the official checkpoint: its scores (objectness x person) on an
    image equal those of stock YOLOv5's own model holding yolov5n.pt (the independent reference)."""
    from yolostitch.run_stock.importer import stock_yaml_dir
    from yolostitch.run_stock.runner import load_stock_weights

    stock = load_stock_weights(shared_weights / "yolov5n.pt", stock_yaml_dir() / "yolov5n.yaml")
    coco128 = shared_weights.parent / "datasets" / "coco128"
    with_persons = [p for p in sorted((coco128 / "labels").rglob("*.txt")) if "\n0 " in "\n" + p.read_text()]
    image = [coco128 / "images" / p.parent.name / f"{p.stem}.jpg" for p in with_persons[:1]]
    if image:
        import cv2

        x = torch.from_numpy(cv2.resize(cv2.imread(str(image[0])), (320, 256))[..., ::-1].copy())
        x = x.permute(2, 0, 1)[None].float() / 255
    else:
        torch.manual_seed(0)
        x = torch.rand(1, 3, 256, 320)
    person = _target(shared_weights / "yolov5n.pt", ["person"])
    with torch.no_grad():
        ours = person.eval()(x)["det"][0]  # (1, N, 6): box, objectness, person
        theirs = stock(x)[0]  # (1, N, 85)
        off = _target(shared_weights / "yolov5n.pt", ["person"], class_transfer=False).eval()(x)["det"][0]
    torch.testing.assert_close(ours[..., :5], theirs[..., :5], atol=1e-4, rtol=1e-4)
    score, reference = ours[..., 4] * ours[..., 5], theirs[..., 4] * theirs[..., 5]
    torch.testing.assert_close(score, reference, atol=1e-4, rtol=1e-4)
    if image:
        assert reference.max() > 0.25  # a real image with persons: yolov5n finds them
    assert not torch.allclose(off[..., 4] * off[..., 5], reference, atol=1e-3)
