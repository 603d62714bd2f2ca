"""compare.py --init: every trained row starts from one checkpoint (ours through train.py's --weights transfer, stock
through stock's own --weights code), the table says what each row took from it, and the rows share data, recipe,
epochs, image size, batch and seed."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.compare import CompareOptions, compare
from yolostitch.weights import save_checkpoint

# an 80-class checkpoint naming two of the tiny data's classes (circle, star), one in another case
NAMES = ["Circle", "dog", "star"] + [f"thing{i}" for i in range(77)]


def _options(tiny_shapes, tmp_path, **kw) -> CompareOptions:
    return CompareOptions(**{"data": str(tiny_shapes), "epochs": 1, "batch_size": 4, "imgsz": 64, "workers": 0,
                             "latency_images": 1, "project": str(tmp_path / "compare"), **kw})


@pytest.fixture()
def stock_checkpoint(stock_yolo, tmp_path) -> tuple[Path, torch.nn.Module]:
    """A checkpoint as stock's own train.py leaves it (whole fp16 model pickled by torch.save, optimizer
    stripped), made by stock's own code: its DetectionModel of yolov5n.yaml, 80 classes, random weights."""
    torch.manual_seed(3)
    model = stock_yolo.import_stock_yolo().DetectionModel(str(stock_yolo.stock_yaml_dir() / "yolov5n.yaml"), nc=80)
    model.names = NAMES
    path = tmp_path / "stock80.pt"
    torch.save({"epoch": -1, "best_fitness": None, "model": copy.deepcopy(model).half(), "ema": None,
                "updates": None, "optimizer": None, "date": None}, path)
    return path, model


def test_init_starts_every_row_from_the_checkpoint_and_the_rows_share_the_recipe(stock_checkpoint, tiny_shapes,
                                                                                 tmp_path, stock_yolo):
    from yolov5.utils.general import intersect_dicts

    path, source = stock_checkpoint
    ours, stock = compare(_options(tiny_shapes, tmp_path, cfg=["yolov5n.yaml"], stock=True, init=str(path)))
    save_dir = tmp_path / "compare" / "exp"

    # ours: our transfer, with the Detect rows of the classes named in both
    assert ours["init"].startswith("342/349 tensors from stock80.pt, +6 Detect convs in part")
    assert ours["init"].endswith("classes matched: circle, star")

    # stock: its own train.py --weights, counted by its own code; the independent count is stock's intersect_dicts
    # between the checkpoint and stock's model of the same YAML with the data's 5 classes
    fresh = stock_yolo.import_stock_yolo().DetectionModel(str(stock_yolo.stock_yaml_dir() / "yolov5n.yaml"), nc=5)
    expected = intersect_dicts(source.float().state_dict(), fresh.state_dict(), exclude=["anchor"])
    assert stock["init"].startswith(f"{len(expected)}/{len(fresh.state_dict())} tensors from stock80.pt")
    log = (save_dir / "yolov5n-stock.log").read_text()
    assert f"Transferred {len(expected)}/{len(fresh.state_dict())} items from {path.resolve()}" in log

    # one recipe for both rows: data, hyp, epochs, imgsz, batch, seed, and the checkpoint they start from
    our_opt = yaml.safe_load((save_dir / "runs" / "yolov5n" / "opt.yaml").read_text())
    stock_opt = yaml.safe_load((save_dir / "runs" / "yolov5n-stock" / "opt.yaml").read_text())  # stock's own
    for key in ("epochs", "imgsz", "batch_size", "seed"):
        assert our_opt[key] == stock_opt[key] == getattr(_options(tiny_shapes, tmp_path), key)
    shared = yaml.safe_load((save_dir / "hyp.yaml").read_text())
    assert our_opt["hyp"] == str(save_dir / "hyp.yaml")
    assert stock_opt["hyp"] == shared  # stock's opt.yaml holds the hyperparameters it read from that file
    assert yaml.safe_load((save_dir / "runs" / "yolov5n-stock" / "hyp.yaml").read_text()) == shared
    assert our_opt["data"] == str(tiny_shapes)  # stock's is the box-only export of the same images
    assert our_opt["weights"] == str(path) and Path(stock_opt["weights"]) == path.resolve()

    # the table says it: Markdown, CSV and JSON
    table = (save_dir / "compare.md").read_text()
    assert "| init |" in table and "classes matched: circle, star" in table and "every trained row from stock80.pt" \
        in table
    assert stock["detect_fresh"] and "stock's --weights leaves Detect's convs fresh" in table  # 80 classes vs 2
    with open(save_dir / "compare.csv") as f:
        assert [r["init"] for r in csv.DictReader(f)] == [ours["init"], stock["init"]]
    assert [r["init"] for r in json.loads((save_dir / "compare.json").read_text())] == [ours["init"], stock["init"]]


def test_no_class_transfer_and_our_own_checkpoint(tiny_shapes, tmp_path):
    torch.manual_seed(0)
    model = build_model("yolov5n.yaml", nc=80)
    model.names = dict(enumerate(NAMES))
    path = save_checkpoint(tmp_path / "ours80.pt", model)
    assert main(["compare", "--data", str(tiny_shapes), "--cfg", "yolov5n.yaml", "--init", str(path),
                 "--no-class-transfer", "--epochs", "1", "--batch-size", "4", "--imgsz", "64", "--workers", "0",
                 "--latency-images", "1", "--project", str(tmp_path / "c")]) == 0
    row, = json.loads((tmp_path / "c" / "exp" / "compare.json").read_text())
    assert row["init"] == ("342/349 tensors from ours80.pt, +6 Detect convs in part (box/obj rows), class matching "
                           "off (--no-class-transfer)")


@pytest.mark.parametrize("argv, message", [
    (["--cfg", "yolov5n.yaml", "--init", "missing.pt"], "--init missing.pt: no such file; give a local .pt"),
    (["--weights", "x.pt", "--init", "yolov5n.pt"], "no --cfg to train from it"),
])
def test_bad_init_is_refused_before_training(argv, message, tiny_shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--data", str(tiny_shapes), "--project", str(tmp_path / "c"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_file_that_is_no_checkpoint_is_refused_before_training(tiny_shapes, tmp_path, capsys):
    bad = tmp_path / "notes.pt"
    torch.save({"hello": torch.zeros(1)}, bad)
    assert main(["compare", "--data", str(tiny_shapes), "--cfg", "yolov5n.yaml", "--init", str(bad),
                 "--project", str(tmp_path / "c")]) == 2
    assert "neither a yolostitch checkpoint nor a stock YOLOv5 one" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
