"""The dataset scan and check-data: every bad input reported and skipped, nothing else lost."""

import json
import os
import time

import cv2
import numpy as np
import pytest

from yolostitch.cli import main
from yolostitch.data.check import check_data
from yolostitch.data.scan import scan_split


def write_image(path, h=40, w=60, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def write_label(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def messy(tmp_path):
    root = tmp_path / "ds"
    img, lab = root / "images" / "train", root / "labels" / "train"
    write_image(img / "good.jpg")
    write_label(lab / "good.txt", "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.3 0.1 0.3 0.3\n")
    write_image(img / "background.png")
    write_image(img / "badlines.jpg")
    write_label(lab / "badlines.txt", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\nzzz\n")
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = (img / "good.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_label(lab / "truncated.txt", "0 0.5 0.5 0.2 0.2\n")
    write_label(lab / "orphan.txt", "0 0.5 0.5 0.2 0.2\n")
    write_image(img / "tiny.png", h=5, w=5)
    return root


def test_scan_reports_and_skips_exactly_the_bad_parts(messy):
    scan = scan_split([messy / "images" / "train"], nc=2, cache=False)
    s = scan.summary({0: "a", 1: "b"})
    assert (s["images"], s["backgrounds"], s["instances"], s["masks"]) == (3, 1, 3, 1)
    reasons = {os.path.basename(p["file"]): p["reason"] for p in s["skipped"]}
    assert "unreadable image" in reasons["corrupt.jpg"]
    assert "truncated" in reasons["truncated.jpg"].lower()
    assert "smaller than 10 px" in reasons["tiny.png"]
    assert reasons["orphan.txt"] == "label file without an image; not counted"
    bad = [p["reason"] for p in s["skipped"] if p["file"].endswith("badlines.txt")]
    assert len(bad) == 3 and "duplicate" in bad[0] and "class 5" in bad[1] and "non-numeric" in bad[2]
    assert s["classes"] == {"a": 2, "b": 1}


def test_cache_is_used_and_rebuilt_when_a_file_changes(messy):
    first = scan_split([messy / "images" / "train"], nc=2)
    cache = messy / "labels" / "train.cache.npz"
    assert cache.is_file()
    again = scan_split([messy / "images" / "train"], nc=2)
    assert again.summary() == first.summary()
    assert [lab.segments[i].tolist() for lab in again.labels for i in range(len(lab))] == \
        [lab.segments[i].tolist() for lab in first.labels for i in range(len(lab))]
    time.sleep(0.01)
    write_label(messy / "labels" / "train" / "good.txt", "0 0.5 0.5 0.2 0.2\n")
    changed = scan_split([messy / "images" / "train"], nc=2)
    assert changed.summary()["instances"] == first.summary()["instances"] - 1


def test_txt_list_and_missing_sources(tmp_path, messy):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{messy}/images/train/good.jpg\nnot_an_image.doc\n")
    scan = scan_split([listing, tmp_path / "nowhere"], nc=2, cache=False)
    assert len(scan.labels) == 1
    assert [p.reason.split(";")[0] for p in scan.problems] == ["'not_an_image.doc' is not an image file",
                                                                "split source not found (expected a folder, a .txt list or a .json)"]


def test_check_data_cli_prints_summary_and_final_json_line(messy, capsys, tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text(f"path: {messy}\ntrain: images/train\nval: images/train\nnames: [a, b]\n")
    assert main(["check-data", "--data", str(data)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    final = json.loads(out[-1])
    assert final["images"] == 3 and final["instances"] == 3 and len(final["skipped"]) == 7  # once, not per split
    assert any("train: 3 images (1 backgrounds)" in line for line in out)


@pytest.mark.parametrize("name, masks", [("coco128", 0), ("coco128-seg", 929)])
def test_check_data_on_coco128(shared_datasets, name, masks):
    root = shared_datasets / name
    data = {"path": str(root), "train": "images/train2017", "val": "images/train2017", "nc": 80}
    s = check_data(data, cache=False)  # never write a cache into ../shared
    assert (s["images"], s["backgrounds"], s["instances"], s["masks"]) == (128, 2, 929, masks)
    assert sorted(os.path.basename(p["file"]) for p in s["skipped"]) == ["000000000656.txt", "000000000659.txt"]


def test_coco_json_split_through_check_data(tmp_path):
    images = tmp_path / "images"
    write_image(images / "a.jpg", 40, 60)
    write_image(images / "b.jpg", 40, 60)
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 60, "height": 40},
                       {"id": 2, "file_name": "b.jpg", "width": 60, "height": 40},
                       {"id": 3, "file_name": "gone.jpg", "width": 60, "height": 40}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [6, 4, 12, 8], "iscrowd": 0,
                             "segmentation": [[6, 4, 18, 4, 18, 12, 6, 12]]},
                            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [30, 10, 10, 10], "iscrowd": 0}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text(json.dumps(coco))
    s = check_data({"path": str(tmp_path), "train": "annotations/train.json", "names": ["cat", "dog"]})
    assert (s["images"], s["backgrounds"], s["instances"], s["masks"]) == (2, 1, 2, 1)
    assert s["classes"] == {"cat": 1, "dog": 1}
    assert any("gone.jpg" in p["file"] and "not found" in p["reason"] for p in s["skipped"])
