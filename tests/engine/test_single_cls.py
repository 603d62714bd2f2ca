"""--single-cls, as stock: train and validate multi-class data as one class. The reference is the same data with
every label file rewritten to class 0."""

import shutil
from pathlib import Path

import pytest
import yaml

from yolostitch import load_model
from yolostitch.engine.trainer import train
from yolostitch.engine.validator import run_val
from yolostitch.errors import FlagError


def _one_class_copy(data_yaml: Path, out: Path) -> Path:
    """The dataset with every label line's class set to 0 and one class named 'item'."""
    config = yaml.safe_load(data_yaml.read_text())
    root = Path(config["path"])
    shutil.copytree(root / "images", out / "images")
    for label in (root / "labels").rglob("*.txt"):
        target = out / "labels" / label.relative_to(root / "labels")
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(["0", *line.split()[1:]]) for line in label.read_text().splitlines() if line.strip()]
        target.write_text("\n".join(lines) + "\n")
    config.update(path=str(out), names=["item"])
    (out / "data.yaml").write_text(yaml.safe_dump(config))
    return out / "data.yaml"


def test_single_cls_trains_one_class_and_validates_as_the_rewritten_data(tiny_shapes, options, tmp_path):
    summary = train(options(cfg="yolov5n-multitask.yaml", single_cls=True, epochs=1))
    weights = Path(summary["save_dir"]) / "weights" / "last.pt"
    model = load_model(weights)
    assert model.nc == 1 and model.names == {0: "item"}

    collapsed = run_val(weights, tiny_shapes, imgsz=64, batch_size=4, workers=0, project=str(tmp_path / "val"),
                        name="single", verbose=False, single_cls=True)
    reference = run_val(weights, _one_class_copy(tiny_shapes, tmp_path / "one-class"), imgsz=64, batch_size=4,
                        workers=0, project=str(tmp_path / "val"), name="rewritten", verbose=False)
    keys = [k for k in reference if k.endswith(("_map50", "_map", "_precision", "_recall"))]
    assert {"box_map", "mask_map", "pose_map"} <= set(keys)
    assert {k: collapsed[k] for k in keys} == {k: reference[k] for k in keys}
    assert collapsed["instances"] == reference["instances"] > 0

    with pytest.raises(FlagError, match="--single-cls"):
        run_val(weights, tiny_shapes, imgsz=64, batch_size=4, workers=0, project=str(tmp_path / "val"),
                verbose=False)
