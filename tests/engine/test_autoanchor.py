"""AutoAnchor: the fit figures equal stock's on the same boxes; poor anchors are refitted in place; training runs it
on a new run (placeholder anchors from ``anchors: 3`` get real ones) and ``--noautoanchor`` keeps the YAML's."""

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from yolostitch import build_model, load_model
from yolostitch.engine.autoanchor import anchor_fit, check_anchors, label_sizes
from yolostitch.engine.trainer import train


def _labels(rng: np.random.Generator, n_images: int, aspect: float = 1.0) -> list[SimpleNamespace]:
    """Images of mixed shapes with boxes of random size; ``aspect`` stretches every box's width over its height."""
    labels = []
    for _ in range(n_images):
        h, w = rng.choice([240, 480, 640]), rng.choice([320, 640])
        n = int(rng.integers(1, 6))
        side, ratio = rng.uniform(0.03, 0.4, (n, 1)), aspect * np.exp(rng.uniform(-0.5, 0.5, (n, 1)))
        wh = np.concatenate([side * np.sqrt(ratio), side / np.sqrt(ratio)], 1)
        boxes = np.concatenate([rng.uniform(0.3, 0.7, (n, 2)), wh.clip(0.002, 1.0)], 1)
        labels.append(SimpleNamespace(shape=(int(h), int(w)), bboxes=boxes))
    return labels


def _stock_line(stock_yolo, labels, head, imgsz: int, thr: float) -> str:
    """What stock's check_anchors logs first for these boxes, its random scale drawn from np.random seeded 0."""
    from yolov5.utils.autoanchor import check_anchors as stock_check

    dataset = SimpleNamespace(shapes=np.array([[lab.shape[1], lab.shape[0]] for lab in labels], dtype=np.float64),
                              labels=[np.concatenate([np.zeros((len(lab.bboxes), 1)), lab.bboxes], 1) for lab in labels])
    detect = SimpleNamespace(anchors=head.anchors.clone(), stride=head.stride.clone())
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    stock_logger = logging.getLogger("yolov5")
    stock_logger.addHandler(handler)
    level = stock_logger.level
    stock_logger.setLevel(logging.INFO)
    np.random.seed(0)
    try:
        stock_check(dataset, SimpleNamespace(model=[detect]), thr=thr, imgsz=imgsz)
    finally:
        stock_logger.removeHandler(handler)
        stock_logger.setLevel(level)
    return next(r for r in records if "Best Possible Recall" in r)


@pytest.mark.parametrize("aspect", [1.0, 6.0])  # a good fit, and a poor one (stock then goes on to evolve)
def test_fit_figures_equal_stock(stock_yolo, aspect):
    labels = _labels(np.random.default_rng(1), 40, aspect)
    head = build_model("yolov5n.yaml", nc=1).model[-1]
    wh = label_sizes(labels, 320, np.random.RandomState(0))  # the same draws as stock's np.random seeded 0
    bpr, aat = anchor_fit(wh, head.anchors * head.stride.view(-1, 1, 1), 4.0)
    assert f"{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall" in _stock_line(stock_yolo, labels, head, 320, 4.0)


def test_poor_anchors_are_refitted_in_place():
    labels = _labels(np.random.default_rng(2), 60, aspect=8.0)  # long flat boxes: the stock anchors miss most
    head = build_model("yolov5n.yaml", nc=1).model[-1]
    stride = head.stride.view(-1, 1, 1)
    wh = label_sizes(labels, 320, np.random.default_rng(0))  # check_anchors' own draws (seed 0)
    before, _ = anchor_fit(wh, head.anchors * stride, 4.0)
    line = check_anchors(head, labels, 320, 4.0, seed=0)
    after, _ = anchor_fit(wh, head.anchors * stride, 4.0)
    assert before < 0.98 and after > before and "new anchors" in line
    area = (head.anchors * stride).prod(-1).flatten()
    assert torch.equal(area, area.sort().values)  # smallest first: P3 gets the small ones, as the strides grow


def test_good_anchors_are_kept():
    labels = _labels(np.random.default_rng(3), 40)
    head = build_model("yolov5n.yaml", nc=1).model[-1]
    anchors = head.anchors.clone()
    assert "good fit" in check_anchors(head, labels, 640, 4.0)
    assert torch.equal(head.anchors, anchors)


def test_training_fits_placeholder_anchors_unless_told_not_to(tiny_shapes, options, tmp_path, caplog):
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "models" / "yaml" / "yolov5n.yaml").read_text())
    config["anchors"] = 3  # stock's "AutoAnchor evolves 3 anchors per P output layer"
    cfg = tmp_path / "yolov5n-anchors3.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    placeholders = build_model(str(cfg), nc=5).model[-1].anchors.clone()

    with caplog.at_level(logging.INFO, logger="yolostitch"):
        fitted = train(options(cfg=str(cfg), epochs=1, name="fitted"))
    assert "new anchors" in caplog.text
    head = load_model(Path(fitted["save_dir"]) / "weights" / "last.pt").model[-1]
    assert not torch.equal(head.anchors, placeholders) and (head.anchors > 0).all()  # saved with the weights

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolostitch"):
        kept = train(options(cfg=str(cfg), epochs=1, name="kept", noautoanchor=True))
    assert "AutoAnchor" not in caplog.text
    assert torch.equal(load_model(Path(kept["save_dir"]) / "weights" / "last.pt").model[-1].anchors, placeholders)


def test_nothing_to_fit_keeps_the_anchors():
    """Boxes all under 2 px: the stock anchors match none, and there is nothing to fit them to."""
    labels = [SimpleNamespace(shape=(640, 640), bboxes=np.array([[0.5, 0.5, 0.001, 0.002]]))] * 4
    head = build_model("yolov5n.yaml", nc=1).model[-1]
    anchors = head.anchors.clone()
    assert "no training box of 2 pixels or more" in check_anchors(head, labels, 640, 4.0)
    assert torch.equal(head.anchors, anchors)
