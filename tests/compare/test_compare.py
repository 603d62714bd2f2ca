"""compare.py: the table's rows agree with the runs they summarise; stock's row agrees with our stock-architecture
row where the two must agree exactly (parameters, GFLOPs); missing stock YOLOv5 is one clear line."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from yolostitch.cli import main
from yolostitch.compare import CompareOptions, compare
from yolostitch.compare.report import markdown
from yolostitch.errors import FlagError


def _options(tiny_shapes, tmp_path, **kw) -> CompareOptions:
    return CompareOptions(**{"data": str(tiny_shapes), "epochs": 1, "batch_size": 4, "imgsz": 64, "workers": 0,
                             "latency_images": 3, "project": str(tmp_path / "compare"), **kw})


def test_trained_and_validated_rows_agree_and_every_file_is_written(tiny_shapes, tmp_path):
    trained, = compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n-multitask.yaml"]))
    save_dir = tmp_path / "compare" / "exp"
    metrics = json.loads((save_dir / "runs" / "yolov5n-multitask" / "metrics.json").read_text())
    for key in ("box_map50", "box_map", "mask_map", "pose_map"):
        assert trained[key] == metrics[key]  # the row is the run's own final validation
    assert trained["parameters"] > 1e6 and trained["gflops"] > 0 and trained["latency_ms"] > 0
    assert trained["train_s"] > 0

    # the same weights validated only: the same accuracy, no training time
    validated, = compare(_options(tiny_shapes, tmp_path, weights=[trained["weights"]], name="val"))
    assert validated["train_s"] is None and validated["source"] == "yolostitch, validated"
    for key in ("box_map50", "box_map", "mask_map", "pose_map", "parameters", "gflops"):
        assert validated[key] == pytest.approx(trained[key], abs=1e-6)

    for name in ("compare.md", "compare.csv", "compare.json", "compare.png"):
        assert (save_dir / name).stat().st_size > 0
    table = (save_dir / "compare.md").read_text()
    assert "| yolov5n-multitask | yolostitch, trained |" in table and "mask mAP50-95" in table
    with open(save_dir / "compare.csv") as f:
        row, = csv.DictReader(f)
    assert float(row["box_map"]) == pytest.approx(trained["box_map"])
    assert float(row["parameters"]) == trained["parameters"]


def test_feature_input_model_trains_on_its_cache_and_is_timed_from_it(tiny_shapes, tmp_path):
    from yolostitch import build_model
    from yolostitch.weights import save_checkpoint

    torch.manual_seed(0)
    backbone = save_checkpoint(tmp_path / "image.pt", build_model("yolov5n.yaml", nc=5).eval())
    cache = tmp_path / "cache"
    assert main(["extract", "--extractor", f"ckpt:{backbone}", "--data", str(tiny_shapes), "--imgsz", "64",
                 "--out", str(cache), "--workers", "0"]) == 0
    row, = compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n-feat.yaml"], features=str(cache)))
    metrics = json.loads((tmp_path / "compare" / "exp" / "runs" / "yolov5n-feat" / "metrics.json").read_text())
    assert row["box_map"] == metrics["box_map"] and row["latency_ms"] > 0
    assert "excl. the feature extractor" in row["latency_note"]
    assert "latency excl. the feature extractor" in (tmp_path / "compare" / "exp" / "compare.md").read_text()

    # from the image model with the adapters stitched to its backbone: the row says so, and the run fitted them
    with pytest.raises(FlagError, match="--stitch-init fits the adapters of the FeatureInput rows"):
        compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n-feat.yaml"], features=str(cache), stitch_init=4))
    row, = compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n-feat.yaml"], features=str(cache),
                            init=str(backbone), stitch_init=4, name="stitched"))
    assert row["init"].endswith("adapters stitched to its backbone on 4 images")
    stitched = json.loads((tmp_path / "compare" / "stitched" / "runs" / "yolov5n-feat" / "metrics.json").read_text())
    assert row["box_map"] == stitched["box_map"]


def test_markdown_shows_mask_and_pose_columns_only_when_a_row_has_them():
    rows = [{"model": "a", "source": "yolostitch, trained", "box_map50": 0.5, "box_map": 0.3, "parameters": 2e6,
             "gflops": 4.2, "latency_ms": 10.0, "train_s": 120.0}]
    table = markdown(rows, "recipe")
    assert "mask" not in table and "pose" not in table
    assert "| a | yolostitch, trained | 0.5000 | 0.3000 | 2.00 | 4.20 | 10.0 | 2.0 min |" in table
    rows.append({**rows[0], "model": "b", "mask_map": 0.25, "train_s": None})
    table = markdown(rows, "recipe")
    assert "mask mAP50-95" in table and "pose" not in table
    assert "| a | yolostitch, trained | 0.5000 | 0.3000 | - |" in table and table.rstrip().count(" - |") >= 2


def test_stock_row_trains_the_same_architecture_on_the_same_data(stock_yolo, tiny_shapes, tmp_path):
    ours, stock = compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n.yaml"], stock=True))
    assert (ours["model"], stock["model"]) == ("yolov5n", "yolov5n") and stock["source"].startswith("stock YOLOv5")
    # one architecture, counted by two code bases: identical parameters and GFLOPs
    assert stock["parameters"] == ours["parameters"]
    assert stock["gflops"] == pytest.approx(ours["gflops"], rel=1e-9)
    assert 0 <= stock["box_map"] <= stock["box_map50"] <= 1 and stock["latency_ms"] > 0 and stock["train_s"] > 0
    # stock trained on the same images, boxes only, with the recipe file every row used
    save_dir = tmp_path / "compare" / "exp"
    spec = json.loads((save_dir / "yolov5n-stock.spec.json").read_text())
    assert (spec["epochs"], spec["imgsz"], spec["batch_size"], spec["seed"]) == (1, 64, 4, 0)
    assert spec["hyp"] == str((save_dir / "hyp.yaml").resolve())
    exported = sorted(p.name for p in (save_dir / "stock-data" / "images" / "train").iterdir())
    assert exported == sorted(p.name for p in (tiny_shapes.parent / "images" / "train").iterdir())
    label = next((save_dir / "stock-data" / "labels" / "train").glob("*.txt")).read_text().splitlines()[0]
    assert len(label.split()) == 5  # cls cx cy w h: stock would misread our keypoint/polygon columns
    assert (save_dir / "runs" / "yolov5n-stock" / "results.csv").is_file()


@pytest.fixture()
def fake_stock(tmp_path, monkeypatch):
    """A ``yolov5`` package that fails to import as a partial install does (a missing dependency)."""
    package = tmp_path / "fake" / "yolov5"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text("")
    (package / "models" / "yolo.py").write_text("import pandas_missing_for_this_test\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))


def test_stock_not_importable_is_one_clear_line(fake_stock, tiny_shapes, tmp_path, capsys):
    code = main(["compare", "--data", str(tiny_shapes), "--cfg", "yolov5n.yaml", "--stock", "--epochs", "1",
                 "--project", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--stock needs the stock YOLOv5 package" in err and "pandas_missing_for_this_test" in err
    assert "Traceback" not in err and not (tmp_path / "c").exists()  # refused before any training


@pytest.mark.parametrize("argv, message", [
    (["--cfg", "yolov5n-pose.yaml", "--stock"], "none of --cfg ['yolov5n-pose.yaml'] has a stock YOLOv5 counterpart"),
    (["--cfg", "yolov5n-feat.yaml"], "--cfg yolov5n-feat.yaml reads feature maps: pass --features DIR"),
    ([], "nothing to compare"),
])
def test_bad_requests_are_refused_before_training(argv, message, tiny_shapes, tmp_path, capsys):
    assert main(["compare", "--data", str(tiny_shapes), "--project", str(tmp_path / "c"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_keypoint_config_on_data_without_kpt_shape_is_refused_before_training(tiny_shapes, tmp_path, capsys):
    """Found on coco128-seg: the multi-task row used to fail only when its turn came, after earlier rows trained."""
    lines = [line for line in tiny_shapes.read_text().splitlines() if not line.startswith(("kpt_shape", "flip_idx"))]
    boxes = tmp_path / "no-kpt.yaml"
    boxes.write_text("\n".join(lines))  # the fixture's path is absolute
    assert main(["compare", "--data", str(boxes), "--project", str(tmp_path / "c"),
                 "--cfg", "yolov5n.yaml", "yolov5n-multitask.yaml"]) == 2
    assert "--cfg yolov5n-multitask.yaml has a keypoint branch" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_cache_without_the_training_images_is_refused_before_training(tiny_shapes, tmp_path, capsys):
    """Found on coco-persons: a cache made before the images were re-written failed only at the feature row,
    after ten minutes of training the rows before it."""
    from yolostitch import build_model
    from yolostitch.weights import save_checkpoint

    backbone = save_checkpoint(tmp_path / "image.pt", build_model("yolov5n.yaml", nc=5).eval())
    cache = tmp_path / "cache"
    assert main(["extract", "--extractor", f"ckpt:{backbone}", "--data", str(tiny_shapes), "--imgsz", "64",
                 "--out", str(cache), "--workers", "0"]) == 0
    index = next(cache.glob("*.json"))
    record = json.loads(index.read_text())
    for entry in record["entries"]:  # the maps of other images, as a cache of another copy of the data holds
        entry["im_file"] = "/elsewhere" + entry["im_file"]
    index.write_text(json.dumps(record))
    assert main(["compare", "--data", str(tiny_shapes), "--project", str(tmp_path / "c"), "--cfg", "yolov5n.yaml",
                 "yolov5n-feat.yaml", "--features", str(cache)]) == 2
    assert "none of the 8 training images" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_the_fresh_detect_note_only_under_stock_rows_whose_detect_started_fresh():
    ours = {"model": "a", "source": "yolostitch, trained", "box_map50": 0.5, "box_map": 0.3, "parameters": 2e6,
            "gflops": 4.2, "latency_ms": 10.0, "train_s": 120.0, "init": "348/349 tensors from x.pt"}
    stock = {**ours, "source": "stock YOLOv5 7.0.14", "init": "348/349 tensors from x.pt (stock's --weights: ...)"}
    assert "leaves Detect's convs fresh" not in markdown([ours, stock], "recipe")  # same class count: same start
    assert "leaves Detect's convs fresh" in markdown([ours, {**stock, "detect_fresh": True}], "recipe")
