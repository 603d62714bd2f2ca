"""Shared by the export tests: the official yolov5n.pt and the first 16 coco128 images as a val-only data dict."""

from __future__ import annotations

import pytest


@pytest.fixture()
def coco128_yolov5n(shared_weights, shared_datasets, tmp_path):
    """(the 16 images, a data dict validating on them, a yolov5n.pt link in ``tmp_path`` to export beside)."""
    images = sorted((shared_datasets / "coco128" / "images" / "train2017").glob("*.jpg"))[:16]
    listing = tmp_path / "subset.txt"
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    data = {"path": str(tmp_path), "val": str(listing), "nc": 80}
    weights = tmp_path / "yolov5n.pt"
    weights.symlink_to(shared_weights / "yolov5n.pt")
    return images, data, weights
