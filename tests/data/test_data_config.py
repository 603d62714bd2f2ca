"""Data YAML safety: a wrong split path fails at load (before any run folder), and the shapes generator never
deletes or overwrites files it did not write."""

import json
import logging

import cv2
import numpy as np
import pytest

from yolostitch.data import shapes
from yolostitch.data.config import DataConfigError, load_data_config
from yolostitch.engine.trainer import TrainOptions, train


@pytest.fixture()
def yolo_data(tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / split / "a.jpg"), np.full((32, 32, 3), 100, np.uint8))
    return root


@pytest.mark.parametrize("key", ["train", "val"])
def test_wrong_split_path_fails_at_load_naming_yaml_key_and_path(yolo_data, tmp_path, key):
    paths = {"train": "images/train", "val": "images/val", key: "images/trian"}
    data = tmp_path / "bad.yaml"
    data.write_text(f"path: {yolo_data}\ntrain: {paths['train']}\nval: {paths['val']}\nnames: [a]\n")
    with pytest.raises(DataConfigError) as e:
        load_data_config(data)
    message = str(e.value)
    assert str(data) in message and f"'{key}'" in message and str(yolo_data / "images" / "trian") in message


def test_train_with_a_wrong_split_path_makes_no_run_folder(yolo_data, tmp_path):
    data = tmp_path / "bad.yaml"
    data.write_text(f"path: {yolo_data}\ntrain: images/trian\nval: images/val\nnames: [a]\n")
    project = tmp_path / "runs"
    with pytest.raises(DataConfigError, match="'train' path"):
        train(TrainOptions(cfg="yolov5n.yaml", data=str(data), epochs=1, imgsz=32, batch_size=1, device="cpu",
                           workers=0, project=str(project)))
    assert not project.exists()


def test_missing_test_split_is_only_logged(yolo_data, tmp_path, caplog):
    data = tmp_path / "d.yaml"
    data.write_text(f"path: {yolo_data}\ntrain: images/train\nval: images/val\ntest: images/test\nnames: [a]\n")
    with caplog.at_level(logging.WARNING, logger="yolostitch.data.config"):
        config = load_data_config(data)
    assert config.splits["train"] == [yolo_data / "images" / "train"]
    assert any("'test' path" in r.getMessage() for r in caplog.records)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generator_with_an_absolute_path_leaves_a_foreign_folder_untouched(yolo_data, tmp_path):
    """A user's dataset with generator-like file names (000000.jpg) under an absolute generator 'path'."""
    for split in ("train", "val"):
        cv2.imwrite(str(yolo_data / "images" / split / "000000.jpg"), np.full((32, 32, 3), 7, np.uint8))
        (yolo_data / "labels" / split / "000000.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    before = snapshot(yolo_data)
    data = tmp_path / "gen.yaml"
    data.write_text(f"path: {yolo_data}\ngenerator: {{name: shapes, n_train: 2, n_val: 1, imgsz: 64}}\n"
                    "train: images/train\nval: images/val\nnames: [circle, triangle, square, star, hexagon]\n")
    with pytest.raises(DataConfigError) as e:
        load_data_config(data)
    assert str(data) in str(e.value) and shapes.MARKER in str(e.value) and "not empty" in str(e.value)
    assert snapshot(yolo_data) == before  # nothing deleted, overwritten or added (not even a lock file)
    with pytest.raises(shapes.GeneratorTargetError):
        shapes.generate_shapes(yolo_data, n_train=2, n_val=1, imgsz=64)
    assert snapshot(yolo_data) == before


def test_generator_owns_new_empty_and_its_own_folders(tmp_path):
    args = dict(n_train=2, n_val=1, imgsz=64)
    empty = tmp_path / "empty"
    empty.mkdir()
    root = shapes.ensure_shapes(empty, **args)
    assert (root / shapes.MARKER).is_file() and (root / "images" / "train" / "000001.jpg").is_file()
    (root / "notes.txt").write_text("mine")  # a user's file in the generator's folder survives regeneration
    shapes.ensure_shapes(root, **{**args, "n_train": 1})
    assert (root / "notes.txt").read_text() == "mine" and not (root / "images" / "train" / "000001.jpg").exists()
    # a generation made before markers existed is recognised by its dataset.json
    (root / shapes.MARKER).unlink()
    assert json.loads((root / "dataset.json").read_text())["generator"] == "shapes"
    shapes.generate_shapes(root, **args)
    assert (root / "images" / "train" / "000001.jpg").is_file()
