"""compare.py --stock with Segment configs: stock YOLOv5-seg (its segment/train.py and segment/val.py) trains on the
same images and polygons with the same recipe, its row carries box and mask mAP as stock's own val logged them, and
a multi-task config is read against stock detection and stock segmentation at once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolostitch.compare import CompareOptions, compare
from yolostitch.compare import runner as compare_runner
from yolostitch.data.config import load_data_config
from yolostitch.data.scan import scan_split
from yolostitch.run_stock.segment import VAL_KEYS

# results.csv column of stock-seg's val output, for each value of segment/val.py's run
CSV_KEYS = dict(zip(VAL_KEYS, ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP_0.5(B)",
                               "metrics/mAP_0.5:0.95(B)", "metrics/precision(M)", "metrics/recall(M)",
                               "metrics/mAP_0.5(M)", "metrics/mAP_0.5:0.95(M)", "val/box_loss", "val/seg_loss",
                               "val/obj_loss", "val/cls_loss")))


def _options(tiny_shapes, tmp_path, **kw) -> CompareOptions:
    return CompareOptions(**{"data": str(tiny_shapes), "epochs": 1, "batch_size": 4, "imgsz": 64, "workers": 0,
                             "latency_images": 2, "project": str(tmp_path / "compare"), **kw})


def _results_csv(path) -> list[dict[str, float]]:
    """Stock's results.csv: one row per epoch (stock appends best.pt's re-validation as a shorter, unlabelled
    line, which is left out)."""
    with open(path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        return [dict(zip(header, map(float, row))) for row in reader if len(row) == len(header)]


def test_seg_config_gets_a_stock_seg_row_from_stocks_own_segment_val(stock_yolo, tiny_shapes, tmp_path):
    ours, stock = compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n-seg.yaml"], stock=True))
    save_dir = tmp_path / "compare" / "exp"
    assert (ours["model"], stock["model"]) == ("yolov5n-seg", "yolov5n-seg")
    assert ours["source"] == "yolostitch, trained" and stock["source"].startswith("stock YOLOv5")

    # the row's accuracy is what stock's segment/val.py gave on the final epoch's EMA, as stock's own results.csv
    # logged it (5 significant digits there); the whole 12-value result is checked, val losses included
    result = json.loads((save_dir / "yolov5n-seg-stock.result.json").read_text())
    epochs = _results_csv(save_dir / "runs" / "yolov5n-seg-stock" / "results.csv")
    assert [e["epoch"] for e in epochs] == [0]
    for key, column in CSV_KEYS.items():
        assert result[key] == pytest.approx(epochs[-1][column], rel=1e-4, abs=1e-6), key
    assert result["val_seg_loss"] > 0  # a real figure, not a default
    for key in ("box_map50", "box_map", "mask_map50", "mask_map"):
        assert stock[key] == result[key]
    assert 0 <= stock["box_map"] <= stock["box_map50"] <= 1 and 0 <= stock["mask_map"] <= stock["mask_map50"] <= 1

    # stock's own YOLOv5n-seg, counted independently: parameters and GFLOPs of its SegmentationModel for 5 classes
    stock_model = stock_yolo.import_stock_yolo().SegmentationModel(
        str(stock_yolo.stock_yaml_dir() / "segment" / "yolov5n-seg.yaml"), nc=5)
    assert stock["parameters"] == sum(p.numel() for p in stock_model.parameters())
    assert stock["gflops"] == pytest.approx(stock_yolo.stock_gflops(stock_model, 64), rel=1e-9)
    assert stock["latency_ms"] > 0 and stock["train_s"] > 0

    # the same recipe: stock's own opt.yaml and hyp.yaml against the shared hyp file and our run's settings
    spec = json.loads((save_dir / "yolov5n-seg-stock.spec.json").read_text())
    assert spec["hyp"] == str((save_dir / "hyp.yaml").resolve())
    stock_opt = yaml.safe_load((save_dir / "runs" / "yolov5n-seg-stock" / "opt.yaml").read_text())
    our_opt = yaml.safe_load((save_dir / "runs" / "yolov5n-seg" / "opt.yaml").read_text())
    for key in ("epochs", "imgsz", "batch_size", "seed", "workers"):
        assert stock_opt[key] == our_opt[key]
    assert stock_opt["cfg"].endswith("models/segment/yolov5n-seg.yaml") and stock_opt["weights"] == ""
    shared = yaml.safe_load((save_dir / "hyp.yaml").read_text())
    stock_hyp = yaml.safe_load((save_dir / "runs" / "yolov5n-seg-stock" / "hyp.yaml").read_text())
    assert stock_hyp == shared

    # the same images, labelled by the same polygons (stock's polygon format, one line per instance)
    data = load_data_config(tiny_shapes)
    for split in ("train", "val"):
        for lab in scan_split(data.splits[split], data.nc, data.kpt_shape).labels:
            name = lab.im_file.rsplit("/", 1)[-1]
            assert (save_dir / "stock-seg-data" / "images" / split / name).resolve() == \
                (tiny_shapes.parent / "images" / split / name).resolve()
            lines = (save_dir / "stock-seg-data" / "labels" / split / name).with_suffix(".txt").read_text() \
                .splitlines()
            assert len(lines) == len(lab) == int(lab.has_mask.sum())
            for line, cls, polygon in zip(lines, lab.cls, lab.segments):
                values = line.split()
                assert int(values[0]) == cls and len(values) == 1 + polygon.size and len(values) % 2 == 1
                np.testing.assert_allclose(np.array(values[1:], float).reshape(-1, 2), polygon, atol=5e-7)

    table = (save_dir / "compare.md").read_text()
    assert "Stock -seg rows" in table and "segment/val.py" in table and "box-only labels" not in table


def test_multitask_is_read_against_stock_detection_and_segmentation(tiny_shapes, tmp_path, monkeypatch):
    """Which stock rows a comparison trains, and where they go in the table (the training itself is the test
    above and test_compare's stock test)."""
    trained = []
    monkeypatch.setattr(compare_runner, "check_stock_available", lambda segment=False: trained.append(("probe",
                                                                                                      segment)))
    monkeypatch.setattr(compare_runner, "train_row", lambda cfg, *a: trained.append(cfg) or
                        {"model": cfg, "source": "yolostitch, trained"})
    monkeypatch.setattr(compare_runner, "stock_row", lambda cfg, *a: trained.append(f"stock {cfg}") or
                        {"model": cfg, "source": "stock YOLOv5"})
    cfgs = ["yolov5n-multitask.yaml", "yolov5n.yaml", "yolov5n-seg.yaml", "yolov5s-multitask.yaml",
            "yolov5n-pose.yaml"]
    compare(_options(tiny_shapes, tmp_path, cfg=cfgs, stock=True))
    assert trained == [("probe", True),
                       "yolov5n-multitask.yaml", "stock yolov5n.yaml", "stock yolov5n-seg.yaml",
                       "yolov5n.yaml", "yolov5n-seg.yaml",  # each stock model once
                       "yolov5s-multitask.yaml", "stock yolov5s.yaml", "stock yolov5s-seg.yaml",
                       "yolov5n-pose.yaml"]  # stock YOLOv5 7.0 has no pose model

    trained.clear()
    own_file = str(Path(__file__).resolve().parents[2] / "models" / "yaml" / "yolov5n-seg.yaml")  # a path: a user's
    compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n.yaml", own_file], stock=True))
    assert trained == [("probe", False), "yolov5n.yaml", "stock yolov5n.yaml", own_file]
