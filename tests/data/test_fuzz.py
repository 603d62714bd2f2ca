"""Malformed datasets never crash the scan or the loader: every bad file is reported, the rest is used."""

import random

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolostitch.data.dataset import MultiTaskDataset, collate
from yolostitch.data.labels import parse_label_text
from yolostitch.data.scan import scan_split

tokens = st.one_of(st.sampled_from(["0", "1", "2", "7", "-1", "0.5", "0.0", "1.0", "1.5", "nan", "inf", "1e-9",
                                    "abc", "", "0.25", "2"]),
                   st.floats(-2, 2).map(lambda f: f"{f:.3f}"))
label_text = st.lists(st.lists(tokens, min_size=0, max_size=30).map(" ".join), max_size=6).map("\n".join)
image_bytes = st.one_of(st.binary(max_size=64), st.just(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30))


def good_jpeg(h, w):
    return cv2.imencode(".jpg", np.random.default_rng(h * w).integers(0, 255, (h, w, 3), np.uint8))[1].tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.booleans(), image_bytes, st.one_of(st.none(), label_text),
                                st.integers(0, 3)), min_size=1, max_size=8), seed=st.integers(0, 1000))
def test_scan_and_loader_survive_garbage(tmp_path_factory, files, seed):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i, (valid, junk, text, cut) in enumerate(files):
        data = good_jpeg(20 + i, 30 + i) if valid else junk
        if valid and cut == 3:
            data = data[: len(data) // 2]  # truncated
        (root / "images" / f"{i}.jpg").write_bytes(data)
        if text is not None:
            (root / "labels" / f"{i}.txt").write_text(text)
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1")
    scan = scan_split([root / "images"], nc=3, kpt_shape=[2, 3], cache=bool(seed % 2))
    def usable(text):  # no label file, an empty one, or one with a valid line (else the image is skipped)
        return text is None or not text.strip() or bool(parse_label_text(text, "", 3, [2, 3])[0])

    expected_ok = sum(valid and cut != 3 and usable(text) for valid, _, text, cut in files)
    assert len(scan.labels) == expected_ok
    assert any(p.file.endswith("orphan.txt") for p in scan.problems)
    if not scan.labels:
        return
    random.seed(seed)
    for augment in (False, True):
        ds = MultiTaskDataset(scan.labels, imgsz=64, augment=augment, kpt_shape=[2, 3], flip_idx=[1, 0],
                              use_masks=True)
        batch = collate([ds[i] for i in range(len(ds))])
        assert batch["img"].shape[0] == len(ds)
        assert len(batch["cls"]) == len(batch["bboxes"]) == len(batch["masks"]) == len(batch["keypoints"])


def test_image_deleted_after_scan_becomes_an_empty_background(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(2):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(good_jpeg(40, 40))
        (tmp_path / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2")
    scan = scan_split([tmp_path / "images"], nc=1, cache=False)
    (tmp_path / "images" / "1.jpg").unlink()
    ds = MultiTaskDataset(scan.labels, imgsz=64)
    assert len(ds[0]["cls"]) == 1 and len(ds[1]["cls"]) == 0
