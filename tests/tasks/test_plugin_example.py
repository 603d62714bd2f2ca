"""The examples/box_colour plugin adds a per-box task from outside the package: its colour labels are made, and
it trains, validates and exports (ONNX) through the standard commands with ``--plugin``; its checkpoint asks for
the plugin when loaded without it."""

import json
import sys
from pathlib import Path

import pytest

from yolostitch.cli import main
from yolostitch.errors import WeightsError
from yolostitch.models import registry as module_registry
from yolostitch.tasks import TASKS
from yolostitch.weights import load_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "box_colour"
PLUGIN = str(EXAMPLE / "colour_task.py")


@pytest.fixture()
def unregister_afterwards():
    """The plugin registers a head and a task process-wide: remove them so that other tests see the built-ins only."""
    yield
    unregister()


def unregister():
    from yolostitch import plugins

    module_registry._REGISTRY.pop("BoxColour", None)
    TASKS._entries.pop("colour", None)
    sys.modules.pop("yolostitch_plugin_colour_task", None)
    plugins.LOADED[:] = [p for p in plugins.LOADED if not p.endswith("colour_task.py")]


@pytest.fixture()
def colour_data(tmp_path):
    from yolostitch.data.shapes import generate_shapes

    root = generate_shapes(tmp_path / "shapes", n_train=8, n_val=4, imgsz=64)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [circle, triangle, square, star, hexagon]\n"
                    "kpt_shape: [5, 3]\nflip_idx: [0, 3, 2, 1, 4]\n")
    sys.path.insert(0, str(EXAMPLE))
    sys.modules.pop("make_colour_labels", None)
    try:
        from make_colour_labels import colour_file, instance_colours
        from yolostitch.data.scan import scan_split

        for split in ("train", "val"):
            for labels in scan_split([root / "images" / split], 5, [5, 3]).labels:
                path = colour_file(labels.im_file)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join(map(str, instance_colours(labels))) + "\n")
    finally:
        sys.path.remove(str(EXAMPLE))
    return data


def test_the_colour_plugin_trains_validates_and_exports(unregister_afterwards, colour_data, tmp_path):
    cfg = str(EXAMPLE / "yolov5n-colour.yaml")
    common = ["--plugin", PLUGIN, "--imgsz", "64", "--workers", "0", "--exist-ok"]
    assert main(["train", *common, "--cfg", cfg, "--data", str(colour_data), "--epochs", "1", "--batch-size", "4",
                 "--project", str(tmp_path), "--name", "train"]) == 0
    weights = tmp_path / "train" / "weights" / "last.pt"
    header = (tmp_path / "train" / "results.csv").read_text().splitlines()[0].split(",")
    assert "train/colour" in header and "metrics/colour_accuracy" in header

    assert main(["val", *common, "--weights", str(weights), "--data", str(colour_data), "--project", str(tmp_path),
                 "--name", "val"]) == 0
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert 0.0 <= metrics["colour_accuracy"] <= 1.0 and "box_map50" in metrics
    assert main(["val", *common, "--weights", str(weights), "--data", str(colour_data), "--project", str(tmp_path),
                 "--name", "val_tta", "--augment"]) == 0  # its own unaugment hook: colours ride the passes
    metrics = json.loads((tmp_path / "val_tta" / "metrics.json").read_text())
    assert 0.0 <= metrics["colour_accuracy"] <= 1.0

    assert main(["export", "--plugin", PLUGIN, "--weights", str(weights), "--imgsz", "64"]) == 0  # verified vs torch
    import onnx

    names = [o.name for o in onnx.load(str(weights.with_suffix(".onnx"))).graph.output]
    assert names == ["det", "colour"]

    unregister()
    with pytest.raises(WeightsError, match="--plugin .*colour_task.py"):
        load_model(weights)




def test_the_example_adds_nothing_under_the_package():
    assert not any("colour" in p.name.lower() for p in (ROOT / "yolostitch").rglob("*.py"))
