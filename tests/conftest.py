"""Shared fixtures. Tests build their own data; ../shared (real checkpoints) is optional and skipped if absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    folder = SHARED / "weights"
    if not (folder / "yolov5n.pt").is_file():
        pytest.skip("../shared/weights is absent (real stock checkpoints are only available in the dev workspace)")
    return folder


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    folder = SHARED / "datasets"
    if not (folder / "coco128").is_dir():
        pytest.skip("../shared/datasets is absent (real datasets are only available in the dev workspace)")
    return folder


@pytest.fixture(scope="session")
def stock_yolo():
    """The stock YOLOv5 code (the `yolov5` PyPI package), offline and shimmed; skipped if not installed."""
    try:
        import stock_yolov5
        return stock_yolov5
    except ImportError as e:
        pytest.skip(f"stock YOLOv5 package unavailable: {e}")
