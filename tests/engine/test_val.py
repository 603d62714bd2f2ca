"""val.py: the stock reproduction on coco128, the pycocotools cross-check, and the CLI's outputs."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.data.scan import scan_split
from yolostitch.engine.validator import run_val
from yolostitch.weights import save_checkpoint



def coco_gt(labels):
    from pycocotools.coco import COCO

    images, anns = [], []
    for lab in labels:
        h, w = lab.shape
        image_id = int(__import__("pathlib").Path(lab.im_file).stem)
        images.append({"id": image_id, "width": w, "height": h})
        for c, (cx, cy, bw, bh) in zip(lab.cls.tolist(), lab.bboxes.tolist()):
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": c, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i} for i in range(80)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def test_yolov5n_on_coco128_reproduces_stock_and_pycocotools(shared_weights, shared_datasets, tmp_path):
    """Stock v7.0 val.py (CPU, imgsz 640, batch 16): 929 instances, mAP50 0.5499, mAP50-95 0.3510."""
    from pycocotools.cocoeval import COCOeval

    coco128 = shared_datasets / "coco128"
    data = {"path": str(coco128), "val": "images/train2017", "nc": 80}
    # workers=0: loader worker processes forked from a long test session each add their share of its pages to the
    # suite's peak resident memory (this test's 2 workers made it 5.0 GiB); the figures do not depend on them
    m = run_val(shared_weights / "yolov5n.pt", data, imgsz=640, batch_size=16, workers=0, save_json=True,
                project=tmp_path, verbose=False, amp="off")  # stock's figures are fp32 on CPU
    assert (m["images"], m["instances"]) == (128, 929)
    assert abs(m["box_map50"] - 0.5499) <= 0.003 and abs(m["box_map"] - 0.3510) <= 0.003
    gt = coco_gt(scan_split([coco128 / "images" / "train2017"], 80).labels)
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(str(tmp_path / "exp" / "predictions.json")), "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
    assert abs(m["box_map50_coco"] - e.stats[1]) <= 0.002 and abs(m["box_map_coco"] - e.stats[0]) <= 0.002
    # the default precision (bf16 autocast on CPUs with native bf16) stays within 0.005 of fp32
    auto = run_val(shared_weights / "yolov5n.pt", data, imgsz=640, batch_size=16, workers=0, project=tmp_path,
                   name="auto", verbose=False)
    assert abs(auto["box_map50"] - m["box_map50"]) <= 0.005 and abs(auto["box_map"] - m["box_map"]) <= 0.005


@pytest.fixture()
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "images" / split / f"{i}.jpg"), rng.integers(0, 255, (48, 64, 3), np.uint8))
            (tmp_path / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n1 0.2 0.3 0.2 0.2\n")
    data = tmp_path / "tiny.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return data


def test_val_cli_writes_metrics_json(tiny_data, tmp_path, capsys):
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=2))
    assert main(["val", "--weights", str(weights), "--data", str(tiny_data), "--imgsz", "64", "--batch-size", "2",
                 "--project", str(tmp_path / "runs"), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "all" in out and "Speed:" in out and "Results saved to" in out
    metrics = json.loads((tmp_path / "runs" / "exp" / "metrics.json").read_text())
    assert {"box_map50", "box_map", "box_precision", "box_recall", "speed_ms_per_image"} <= set(metrics)
    assert metrics["images"] == 3 and metrics["instances"] == 6 and 0 <= metrics["box_map"] <= 1
    assert (tmp_path / "runs" / "exp" / "val_batch0_pred.jpg").is_file()


def test_val_names_a_class_count_mismatch(tiny_data, tmp_path, capsys):
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=3))
    assert main(["val", "--weights", str(weights), "--data", str(tiny_data), "--imgsz", "64",
                 "--project", str(tmp_path / "runs")]) == 2
    assert "predicts 3 classes but" in capsys.readouterr().err


@pytest.mark.parametrize("cfg, keys", [("yolov5n-cls.yaml", {"cls_accuracy", "cls_exact"}),
                                       ("yolov5n-seg.yaml", {"mask_map50", "mask_map", "mask_map_coco"})])
def test_val_reports_each_branch(tiny_data, tmp_path, capsys, cfg, keys):
    weights = save_checkpoint(tmp_path / "w.pt", build_model(cfg, nc=2))
    assert main(["val", "--weights", str(weights), "--data", str(tiny_data), "--imgsz", "64", "--batch-size", "2",
                 "--project", str(tmp_path / "runs"), "--workers", "0", "--save-json"]) == 0
    metrics = json.loads((tmp_path / "runs" / "exp" / "metrics.json").read_text())
    assert keys <= set(metrics) and "pose_map" not in metrics
    assert all(0 <= metrics[k] <= 1 for k in keys)
    json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())


def test_val_save_txt_lines_are_the_json_predictions(tiny_data, tmp_path, capsys):
    """--save-txt --save-conf: one line per prediction, the same boxes and confidences as --save-json's records
    (normalised by the image size), in detect.py --save-txt's form."""
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=2))
    assert main(["val", "--weights", str(weights), "--data", str(tiny_data), "--imgsz", "64", "--workers", "0",
                 "--project", str(tmp_path / "runs"), "--save-json", "--save-txt", "--save-conf", "--amp", "off"]) == 0
    run = tmp_path / "runs" / "exp"
    assert "labels saved to" in capsys.readouterr().out
    records = json.loads((run / "predictions.json").read_text())
    files = sorted((run / "labels").glob("*.txt"))
    assert [f.stem for f in files] == ["0", "1", "2"]
    for f in files:
        lines = [[float(v) for v in line.split()] for line in f.read_text().splitlines()]
        mine = sorted([r for r in records if str(r["image_id"]) == f.stem], key=lambda r: -r["score"])
        assert len(lines) == len(mine) > 0
        for line, record in zip(sorted(lines, key=lambda v: -v[-1]), mine):
            x, y, w, h = record["bbox"]
            expected = [(x + w / 2) / 64, (y + h / 2) / 48, w / 64, h / 48]
            np.testing.assert_allclose(line[1:5], expected, atol=1e-3)
            assert abs(line[5] - record["score"]) < 1e-4


def test_val_prints_class_rows_below_50_classes_or_with_verbose(tiny_data, tmp_path, capsys):
    """As stock: a row per class when there are fewer than 50 classes, or with --verbose."""
    many = tmp_path / "many.yaml"
    names = ", ".join(["a", "b"] + [f"c{i}" for i in range(58)])
    many.write_text(tiny_data.read_text().replace("names: [a, b]", f"names: [{names}]"))
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=60))
    common = ["val", "--weights", str(weights), "--data", str(many), "--imgsz", "64", "--workers", "0", "--conf-thres", "0",
              "--project", str(tmp_path / "runs")]
    assert main(common) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["class0"]]
    assert main([*common, "--verbose"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["class0"]]


def test_half_is_stocks_flag(tiny_data, tmp_path, capsys):
    """--half (stock's fp16 on CUDA, ignored on a CPU) runs as --amp auto; with --amp off it is a contradiction."""
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=2))
    common = ["val", "--weights", str(weights), "--data", str(tiny_data), "--imgsz", "64", "--workers", "0",
              "--project", str(tmp_path / "runs")]
    assert main([*common, "--half"]) == 0
    assert main([*common, "--amp", "auto"]) == 0
    half, auto = [json.loads((tmp_path / "runs" / name / "metrics.json").read_text()) for name in ("exp", "exp2")]
    assert half["precision"] == auto["precision"] and half["box_map"] == auto["box_map"]
    capsys.readouterr()
    assert main([*common, "--half", "--amp", "off"]) == 2
    assert "--half and --amp off" in capsys.readouterr().err
