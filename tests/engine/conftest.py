"""Engine fixtures: a tiny generated multi-task dataset and short-run training options."""

import pytest

from yolostitch.data.shapes import generate_shapes
from yolostitch.engine.trainer import TrainOptions


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=8, n_val=4, imgsz=64)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\n"
                    "names: [circle, triangle, square, star, hexagon]\nkpt_shape: [5, 3]\nflip_idx: [0, 3, 2, 1, 4]\n")
    return data


@pytest.fixture()
def options(tiny_shapes, tmp_path):
    """Factory of short-run options: 2 epochs at 64 px, batch 4, no worker processes, on ``tiny_shapes``."""
    def make(**kw) -> TrainOptions:
        return TrainOptions(**{"cfg": "yolov5n.yaml", "data": str(tiny_shapes), "epochs": 2, "batch_size": 4,
                               "imgsz": 64, "workers": 0, "project": str(tmp_path / "runs"), **kw})
    return make
