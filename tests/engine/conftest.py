"""Engine fixtures: short-run training options on the tiny generated dataset (``tiny_shapes``, tests/conftest.py)."""

import pytest

from yolostitch.engine.trainer import TrainOptions


@pytest.fixture()
def options(tiny_shapes, tmp_path):
    """Factory of short-run options: 2 epochs at 64 px, batch 4, no worker processes, on ``tiny_shapes``."""
    def make(**kw) -> TrainOptions:
        return TrainOptions(**{"cfg": "yolov5n.yaml", "data": str(tiny_shapes), "epochs": 2, "batch_size": 4,
                               "imgsz": 64, "workers": 0, "project": str(tmp_path / "runs"), **kw})
    return make
