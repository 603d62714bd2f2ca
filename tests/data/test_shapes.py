"""The built-in synthetic dataset: deterministic, parseable, and its labels are faithful to the pixels."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from yolostitch.data import shapes
from yolostitch.data.labels import parse_label_text

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(n_train=12, n_val=4, imgsz=128)
SIZE = SMALL["imgsz"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fill(polygon: np.ndarray) -> np.ndarray:
    """The mask a consumer gets from a normalised label polygon (pixel-index convention)."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.rint(polygon * SIZE).astype(np.int32)], 1)
    return mask.astype(bool)


def _near(mask: np.ndarray, x: float, y: float, radius: int) -> bool:
    px, py = int(x), int(y)
    return bool(mask[max(py - radius, 0):py + radius + 1, max(px - radius, 0):px + radius + 1].any())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return shapes.generate_shapes(tmp_path_factory.mktemp("shapes"), **SMALL)


@pytest.fixture(scope="module")
def parsed(dataset) -> list[tuple[str, int, list]]:
    """(split, index, parsed lines) for every image; fails on any parse problem."""
    out = []
    for split, n in (("train", SMALL["n_train"]), ("val", SMALL["n_val"])):
        for i in range(n):
            file = dataset / "labels" / split / f"{i:06d}.txt"
            lines, problems = parse_label_text(file.read_text(), str(file), nc=5, kpt_shape=[5, 3])
            assert problems == [], problems
            assert len(lines) == len(file.read_text().splitlines())
            out.append((split, i, lines))
    return out


def test_layout_and_metadata(dataset):
    for split, n in (("train", 12), ("val", 4)):
        assert len(list((dataset / "images" / split).glob("*.jpg"))) == n
        assert len(list((dataset / "labels" / split).glob("*.txt"))) == n
        img = cv2.imread(str(dataset / "images" / split / "000000.jpg"))
        assert img.shape == (SIZE, SIZE, 3)
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["version"] == shapes.VERSION and meta["args"]["n_train"] == 12 and meta["args"]["seed"] == 0
    assert not list(dataset.glob(".*.tmp"))


def test_deterministic_in_any_process(dataset, tmp_path):
    again = shapes.generate_shapes(tmp_path / "again", **SMALL, workers=2)
    assert _files(again) == _files(dataset)
    other = _files(shapes.generate_shapes(tmp_path / "other", **SMALL, seed=1))
    reference = _files(dataset)
    assert sum(other[k] != reference[k] for k in reference if k.endswith(".jpg")) >= 15


def test_files_match_rendering(dataset):
    sample = shapes.render_sample(0, 1, 2, shapes.ShapesConfig(imgsz=SIZE))
    assert (dataset / "labels/val/000002.txt").read_text().splitlines() == sample.lines


def test_every_instance_has_box_keypoints_polygon(parsed):
    for _, _, lines in parsed:
        for p in lines:
            assert 0 <= p.cls < 5 and (p.box[2:] > 0).all()
            assert p.keypoints.shape == (5, 3) and len(p.polygon) >= 3


def test_polygon_is_the_visible_region(parsed):
    for split, index, lines in parsed:
        sample = shapes.render_sample(0, ("train", "val").index(split), index, shapes.ShapesConfig(imgsz=SIZE))
        assert len(sample.masks) == len(lines)
        for p, truth in zip(lines, sample.masks):
            mask = _fill(p.polygon)
            cx, cy, w, h = p.box * SIZE
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            ys, xs = np.nonzero(mask)
            inside = (xs >= x1 - 0.5) & (xs < x2 + 0.5) & (ys >= y1 - 0.5) & (ys < y2 + 0.5)
            assert inside.mean() >= 0.9
            lo, hi = p.polygon.min(0) * SIZE, p.polygon.max(0) * SIZE
            assert np.allclose([x1, y1, x2, y2], [*lo, *hi], atol=1.5)  # box = pixel extent
            assert (mask & truth).sum() / (mask | truth).sum() >= 0.8  # fillPoly gives back the pixels
            missed = truth.sum() - (mask & truth).sum()
            assert missed <= max(0.1 * truth.sum(), 4)  # tiny regions: a few boundary pixels of rounding
            assert truth.sum() >= 16


def test_keypoints(parsed):
    for split, index, lines in parsed:
        sample = shapes.render_sample(0, ("train", "val").index(split), index, shapes.ShapesConfig(imgsz=SIZE))
        for p, truth in zip(lines, sample.masks):
            xy, v = p.keypoints[:, :2] * SIZE, p.keypoints[:, 2]
            assert ((xy[v > 0] >= 0) & (xy[v > 0] < SIZE)).all()
            assert (xy[v == 0] == 0).all()
            polygon_mask = _fill(p.polygon)
            for (x, y), vis in zip(xy, v):
                if vis == 2:
                    assert _near(truth, x, y, 2) and _near(polygon_mask, x, y, 2)
            labelled = v > 0
            if labelled[[0, 2]].all():
                assert xy[0, 1] <= xy[2, 1]  # top above bottom
            if labelled[[1, 3]].all():
                assert xy[1, 0] >= xy[3, 0]  # right of left: flip_idx swaps 1 and 3


def test_keypoints_are_outline_extremes():
    square = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]])
    kpts = shapes.shape_keypoints(square, np.array([20.0, 20.0]))
    assert np.allclose(kpts, [[20, 10], [30, 20], [20, 30], [10, 20], [20, 20]], atol=0.2)
    diamond = np.array([[20.0, 5.0], [35.0, 20.0], [20.0, 35.0], [5.0, 20.0]])
    kpts = shapes.shape_keypoints(diamond, np.array([20.0, 20.0]))
    assert np.allclose(kpts[:4], diamond, atol=0.3)


def test_dataset_is_varied(parsed):
    assert any(not lines for _, _, lines in parsed), "no background images"
    classes = {p.cls for _, _, lines in parsed for p in lines}
    assert len(classes) >= 4
    vis = np.concatenate([p.keypoints[:, 2] for _, _, lines in parsed for p in lines])
    assert {0, 1, 2} <= set(vis.tolist())
    areas = np.array([p.box[2] * p.box[3] for _, _, lines in parsed for p in lines])
    assert areas.max() / areas.min() > 8


def test_ensure_shapes_skips_and_regenerates(tmp_path, monkeypatch):
    args = dict(n_train=3, n_val=2, imgsz=64)
    root = shapes.ensure_shapes(tmp_path, **args)
    first = _files(root)
    real = shapes.generate_shapes

    def fail(*a, **k):
        raise AssertionError("regenerated although the arguments match")

    monkeypatch.setattr(shapes, "generate_shapes", fail)
    shapes.ensure_shapes(tmp_path, **args, workers=2)  # workers do not change the output
    shapes.ensure_shapes(tmp_path, **{**args, "size_range": [0.06, 0.35]})  # YAML gives lists
    monkeypatch.setattr(shapes, "generate_shapes", real)

    shapes.ensure_shapes(tmp_path, **{**args, "n_train": 2, "seed": 5})
    assert json.loads((root / "dataset.json").read_text())["args"]["seed"] == 5
    assert not (root / "images/train/000002.jpg").exists()  # stale files of the old generation removed
    assert _files(root) != first

    (root / "dataset.json").unlink()  # an interrupted generation never wrote it
    shapes.ensure_shapes(tmp_path, **args)
    assert _files(root) == first


def test_generation_is_announced_once(tmp_path, caplog):
    """The first use of the built-in data takes seconds: one line says it is being generated, and where."""
    args = dict(n_train=2, n_val=1, imgsz=64)
    with caplog.at_level(logging.INFO, logger="yolostitch"):
        shapes.ensure_shapes(tmp_path / "data", **args)
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [f"generating the built-in dataset in {tmp_path / 'data'} (2 train + 1 val images; once, "
                         "later runs reuse it)"]
        caplog.clear()
        shapes.ensure_shapes(tmp_path / "data", **args)  # up to date: silent
    assert caplog.records == []


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size_range"):
        shapes.generate_shapes(tmp_path, size_range=(0.5, 0.1))
    with pytest.raises(TypeError):
        shapes.ensure_shapes(tmp_path, colour="red")


@pytest.mark.parametrize("name", ["shapes", "shapes-hard"])
def test_yaml_agrees_with_generator(name):
    data = yaml.safe_load((ROOT / "data" / f"{name}.yaml").read_text())
    assert data["names"] == shapes.NAMES and data["nc"] == len(shapes.NAMES)
    assert data["kpt_shape"] == shapes.KPT_SHAPE and data["flip_idx"] == shapes.FLIP_IDX
    generator = dict(data["generator"])
    assert generator.pop("name") == "shapes"
    assert set(generator) <= set(inspect.signature(shapes.generate_shapes).parameters)
    assert (data["path"], data["train"], data["val"]) == (name, "images/train", "images/val")
    shapes._check(shapes._arguments(**generator))  # valid arguments


@st.composite
def _masks(draw) -> np.ndarray:
    mask = np.zeros((40, 40), np.uint8)
    for _ in range(draw(st.integers(1, 5))):
        x, y, r = draw(st.integers(0, 39)), draw(st.integers(0, 39)), draw(st.integers(2, 12))
        cv2.circle(mask, (x, y), r, draw(st.sampled_from([0, 1, 1])), -1)
    return mask.astype(bool)


@settings(max_examples=60, deadline=None)
@given(_masks())
def test_mask_polygon_reproduces_parts_and_holes(mask):
    polygon = shapes.mask_polygon(mask)
    if polygon is None:  # nothing to outline, or only hairlines (no 2x2 block of pixels): no mask label
        assert not cv2.erode(mask.astype(np.uint8), np.ones((2, 2), np.uint8), borderType=cv2.BORDER_CONSTANT,
                             borderValue=0).any()
        return
    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(filled, [polygon.astype(np.int32)], 1)
    filled = filled.astype(bool)
    assert (filled & mask).sum() >= 0.9 * mask.sum() - 1  # approxPolyDP trims at most corner pixels
    rings = len(cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)[0])
    extra = filled & ~mask  # only the 1-px bridges joining parts and holes, and trimmed corners
    assert extra.sum() <= 0.1 * mask.sum() + 60 * (rings - 1) + 2
