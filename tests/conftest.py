"""Shared fixtures. Tests build their own data; ../shared (real checkpoints) is optional and skipped if absent."""

from __future__ import annotations

import ctypes
import gc
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_configure(config) -> None:
    """Opt-in memory log: ``YOLOSTITCH_TEST_RSS=rss.tsv python -m pytest`` writes each test's peak resident
    memory (the pytest process and its subprocesses) to rss.tsv and prints the heaviest tests (Linux only;
    see tests/rss_monitor.py)."""
    log = os.environ.get("YOLOSTITCH_TEST_RSS")
    if log:
        from rss_monitor import RssMonitor

        config.pluginmanager.register(RssMonitor(Path(log).resolve()), "yolostitch-rss-monitor")


def _return_freed_memory() -> None:
    """Collect cycles (models, optimizers and loaders often sit in them) and hand freed heap pages back to the
    OS (glibc keeps them otherwise), so the pytest process does not grow test after test; loader workers and
    DDP ranks forked later then start from a small parent."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@pytest.fixture(autouse=True)
def _free_memory_after_each_test():
    yield
    _return_freed_memory()


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
        from yolostitch.run_stock import importer

        importer.import_stock_yolo()
        return importer
    except ImportError as e:
        pytest.skip(f"stock YOLOv5 package unavailable: {e}")


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """A tiny generated multi-task dataset (8 train, 4 val images of 64 px); its data YAML."""
    from yolostitch.data.shapes import generate_shapes

    root = generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=8, n_val=4, imgsz=64)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\n"
                    "names: [circle, triangle, square, star, hexagon]\nkpt_shape: [5, 3]\nflip_idx: [0, 3, 2, 1, 4]\n")
    return data
