"""The built-in synthetic multi-task dataset ("shapes"): the project's default data, generated on first use.

Each image shows coloured shapes of five classes (:data:`NAMES`) on a textured, cluttered background. Every
instance is labelled by a multi-task line (see :mod:`yolostitch.data.labels`): box, 5 keypoints, polygon.

* Keypoints: 0 top-most, 1 right-most, 2 bottom-most, 3 left-most point of the full (unoccluded) outline,
  4 the centre. Where a side is nearly parallel to an image axis the extreme point is the mean of the outline
  points within half a pixel of the extreme, so the point moves continuously as the shape rotates.
  Visibility 2: the instance's visible pixels come within 2 px of the point; 1: inside the image but covered
  (by later shapes); 0: outside the image, written as ``0 0 0``.
* Polygon: the *visible* region (after occlusion by later shapes and clipping to the image), traced from the
  rendered pixels. Separate parts and holes are joined into one ring by zero-width bridges, so that
  ``cv2.fillPoly`` of the polygon gives back the pixels (plus 1-px bridges). Fragments smaller than 2 % of the
  region (or 8 px) are left out. The box is the extent of the kept visible pixels.
* Instances whose visible area is < 25 % of their full area, or narrower or shorter than 4 px, are not
  labelled: they stay drawn, as background, and still cover what lies under them.

Coordinates are divided by the image size. Box and keypoints are continuous (pixel i spans [i, i + 1));
polygon vertices are boundary-pixel indices, the convention that ``cv2.fillPoly`` (YOLO mask rasterisation)
inverts exactly.

Difficulty: log-uniform sizes (many small objects), aspect jitter and rotation, colours not tied to the class
(some camouflaged against the background), flat/gradient/striped fills and outlines, occlusion, objects cut by
the image border, distractor clutter (lines, arcs, lumpy blobs, crosses) in the same colours, contrast and
brightness changes, blur on ~30 % of images, Gaussian noise, JPEG (quality 90). Every 20th image
(index % 20 == 10) has no objects: exactly 5 % backgrounds.

Determinism: image ``index`` of split ``s`` draws only from ``np.random.default_rng([seed, s, index])`` and is
drawn with integer OpenCV rasterisation and plain numpy arithmetic, so images can be made in any order, in
any process, with identical bytes. Vertices are rounded to fixed point before integer rasterisation and
nothing uses BLAS or threads, so other machines agree too; JPEG bytes assume OpenCV's bundled libjpeg.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

logger = logging.getLogger(__name__)

NAMES = {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "hexagon"}
KPT_SHAPE = [5, 3]
FLIP_IDX = [0, 3, 2, 1, 4]
VERSION = 2  # bump whenever the generated files change
SPLITS = ("train", "val")
JPEG_QUALITY = 90
BACKGROUND_EVERY = 20  # image index % 20 == 10 is a background (5 %)

MIN_VISIBLE_FRACTION = 0.25
MIN_SIDE_PX = 4
POLY_EPS = 0.5  # approxPolyDP tolerance, px
SHIFT = 4  # fixed-point bits for sub-pixel rasterisation
_FILE = re.compile(r"^\d{6}\.(jpg|txt)$")
MARKER = ".yolostitch-shapes"  # written first into every folder the generator writes into
_LOCK = ".generate.lock"


class GeneratorTargetError(ValueError):
    """The folder to generate into holds files the generator did not write."""


@dataclass(frozen=True)
class ShapesConfig:
    """Per-image generation parameters (everything but the sample counts and the seed)."""

    imgsz: int = 320
    min_objects: int = 2
    max_objects: int = 8
    size_range: tuple[float, float] = (0.06, 0.35)
    clutter: float = 0.5
    noise: float = 0.04
    occlusion: float = 0.35


@dataclass
class _Shape:
    cls: int
    outline: np.ndarray  # (N, 2) continuous image coordinates of the geometric outline
    centre: np.ndarray  # (2,)
    radius: float
    box: tuple[int, int, int, int] | None = None  # drawn crop x0 y0 x1 y1 (None: entirely outside)


@dataclass
class Sample:
    """One rendered image: BGR pixels, label lines, and the visible mask of each labelled instance."""

    image: np.ndarray
    lines: list[str]
    masks: list[np.ndarray]  # (H, W) bool, same order as lines


# ----------------------------------------------------------------------------------------------- geometry


def _ring(n: int, phase: float, radii: list[float] | None = None) -> np.ndarray:
    """n points on the unit circle (y down), starting at angle ``phase``; math.cos/sin for portability."""
    radii = radii or [1.0] * n
    return np.array([[r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n)]
                     for k, r in zip(range(n), radii)])


def _unit_outline(cls: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """The class's outline with circumradius 1, before aspect jitter, rotation and placement."""
    if cls == 0:
        return _ring(int(np.clip(2 * math.pi * radius / 3, 16, 128)), 0.0)
    if cls == 1:
        return _ring(3, -math.pi / 2)
    if cls == 2:
        return _ring(4, math.pi / 4)
    if cls == 3:
        inner = float(rng.uniform(0.38, 0.55))
        return _ring(10, -math.pi / 2, [1.0, inner] * 5)
    return _ring(6, 0.0)


def _make_shape(cls: int, centre: np.ndarray, radius: float, rng: np.random.Generator) -> _Shape:
    unit = _unit_outline(cls, radius, rng)
    aspect = math.exp(float(rng.uniform(-0.22, 0.22)))
    angle = float(rng.uniform(0, 2 * math.pi))
    c, s = math.cos(angle), math.sin(angle)
    scaled = unit * np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)]) * radius
    rotated = scaled @ np.array([[c, s], [-s, c]])
    return _Shape(cls, rotated + centre, centre.astype(np.float64), radius)


def _densify(outline: np.ndarray, step: float = 0.25) -> np.ndarray:
    """Points along the closed outline at most ``step`` px apart."""
    edges = np.roll(outline, -1, axis=0) - outline
    counts = np.maximum(1, np.ceil(np.hypot(edges[:, 0], edges[:, 1]) / step)).astype(int)
    edge = np.repeat(np.arange(len(outline)), counts)
    t = (np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts, counts)) / counts[edge]
    return outline[edge] + edges[edge] * t[:, None]


def _extreme(points: np.ndarray, axis: int, sign: int) -> np.ndarray:
    """Mean of the points within half a pixel of the extreme along ``axis`` (sign -1: minimum)."""
    values = points[:, axis] * sign
    return points[values >= values.max() - 0.5].mean(0)


def shape_keypoints(outline: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(5, 2) top, right, bottom, left extreme points of the outline, then the centre."""
    dense = _densify(outline)
    return np.stack([_extreme(dense, 1, -1), _extreme(dense, 0, 1), _extreme(dense, 1, 1),
                     _extreme(dense, 0, -1), centre])


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ----------------------------------------------------------------------------------------------- drawing


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _bilinear(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Upsample a (gh, gw, C) grid to (h, w, C) by bilinear interpolation (numpy only: bit-portable)."""
    grid = grid.astype(np.float32)
    gh, gw = grid.shape[:2]
    ys, xs = np.linspace(0, gh - 1, h, dtype=np.float32), np.linspace(0, gw - 1, w, dtype=np.float32)
    y0, x0 = np.minimum(ys.astype(int), gh - 2), np.minimum(xs.astype(int), gw - 2)
    ty, tx = (ys - y0.astype(np.float32))[:, None, None], (xs - x0.astype(np.float32))[None, :, None]
    rows = grid[:, x0] * (1 - tx) + grid[:, x0 + 1] * tx  # (gh, w, C)
    steps = np.diff(rows, axis=0)
    return rows[y0] + steps[y0] * ty


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour gradient plus a finer blotchy texture, made at 1/4 size and upsampled."""
    small = max(8, size // 4)
    g = int(rng.integers(2, 5))
    base = _bilinear(rng.uniform(0, 255, (g, g, 3)), small, small)
    t = int(rng.integers(6, 16))
    texture = _bilinear(rng.uniform(-1, 1, (t, t, 3)), small, small) * np.float32(rng.uniform(5, 30))
    low = np.clip(np.rint(base + texture), 0, 255).astype(np.uint8)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR_EXACT)  # bit-exact by design


def _point(rng: np.random.Generator, size: int) -> tuple[int, int]:
    x, y = rng.integers(-size // 8, size + size // 8, 2)
    return int(x), int(y)


def _blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """A lumpy closed outline (radial Fourier perturbation), clearly not one of the classes."""
    r = size * math.exp(float(rng.uniform(math.log(0.02), math.log(0.15))))
    n = 48
    radii = np.ones(n)
    k = np.arange(n)
    for harmonic in (2, 3, 4):
        amp, phase = float(rng.uniform(0.12, 0.32)), float(rng.uniform(0, 2 * math.pi))
        radii += amp * np.array([math.cos(harmonic * 2 * math.pi * i / n + phase) for i in k])
    return _ring(n, 0.0, list(np.maximum(radii, 0.2) * r)) + np.array(_point(rng, size))


def _draw_clutter(img: np.ndarray, rng: np.random.Generator, clutter: float) -> None:
    """Distractors that are not objects: lines, arcs, lumpy blobs, crosses, in object-like colours."""
    size = img.shape[0]
    for _ in range(int(rng.integers(0, round(2 * clutter * 10) + 1))):
        kind = int(rng.integers(0, 4))
        colour = tuple(int(c) for c in _colour(rng))
        thick = int(rng.integers(1, max(2, size // 80) + 1))
        if kind == 0:
            cv2.line(img, _point(rng, size), _point(rng, size), colour, thick, cv2.LINE_8)
        elif kind == 1:
            axes = tuple(int(a) for a in rng.integers(max(3, size // 40), size // 5, 2))
            start = int(rng.integers(0, 360))
            cv2.ellipse(img, _point(rng, size), axes, int(rng.integers(0, 180)), start,
                        start + int(rng.integers(60, 290)), colour, thick, cv2.LINE_8)
        elif kind == 2:
            pts = np.rint((_blob(rng, size) - 0.5) * (1 << SHIFT)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_8, SHIFT)
        else:
            (x, y), arm = _point(rng, size), int(rng.integers(max(3, size // 40), size // 12 + 4))
            cv2.line(img, (x - arm, y), (x + arm, y), colour, thick + 1, cv2.LINE_8)
            cv2.line(img, (x, y - arm), (x, y + arm), colour, thick + 1, cv2.LINE_8)


def _fill_colours(rng: np.random.Generator, img: np.ndarray, shape: _Shape, box: tuple[int, int, int, int]
                  ) -> np.ndarray:
    """(h, w, 3) fill colours over the crop ``box``: flat, linear gradient or stripes."""
    x0, y0, x1, y1 = box
    cx, cy = (int(np.clip(v, 0, img.shape[0] - 1)) for v in shape.centre)
    if rng.random() < 0.12:  # camouflage: close to the background under the shape
        offset = rng.choice([-1.0, 1.0], 3) * rng.integers(25, 60, 3)
        first = np.clip(img[cy, cx].astype(np.float32) + offset, 0, 255).astype(np.float32)
    else:
        first = _colour(rng)
    style, second = rng.random(), _colour(rng)
    flat = np.broadcast_to(first, (y1 - y0, x1 - x0, 3))
    if style < 0.5:
        return flat
    angle = float(rng.uniform(0, 2 * math.pi))
    xs, ys = np.meshgrid(np.arange(x0, x1) - shape.centre[0], np.arange(y0, y1) - shape.centre[1])
    along = (xs * math.cos(angle) + ys * math.sin(angle))[..., None]
    if style < 0.85:
        t = np.clip(along / (2 * shape.radius) + 0.5, 0, 1)
        return first * (1 - t) + second * t
    period = float(rng.uniform(3, max(4.0, shape.radius / 2)))
    return np.where(np.floor(along / period) % 2 == 0, first, second)


def _crop_box(points: np.ndarray, pad: int, size: int) -> tuple[int, int, int, int] | None:
    x0, y0 = np.floor(points.min(0)).astype(int) - pad - 1
    x1, y1 = np.ceil(points.max(0)).astype(int) + pad + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def _draw_shape(img: np.ndarray, owner: np.ndarray, idx: int, shape: _Shape, rng: np.random.Generator) -> None:
    """Paint the shape (fill, optional outline) over ``img`` and mark its pixels as owned by ``idx``."""
    thick = int(np.clip(round(shape.radius / 20), 1, 3)) if rng.random() < 0.3 else 0
    box = _crop_box(shape.outline, thick, img.shape[0])
    colours = _fill_colours(rng, img, shape, box) if box else None
    line_colour = tuple(int(c) for c in _colour(rng))
    shape.box = box
    if box is None:
        return
    x0, y0, x1, y1 = box
    pts = np.rint((shape.outline - 0.5 - (x0, y0)) * (1 << SHIFT)).astype(np.int32)
    fill = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(fill, [pts], 1, cv2.LINE_8, SHIFT)
    stroke = np.zeros_like(fill)
    if thick:
        cv2.polylines(stroke, [pts], True, 1, thick, cv2.LINE_8, SHIFT)
    crop, own = img[y0:y1, x0:x1], owner[y0:y1, x0:x1]
    inside = fill.astype(bool)
    crop[inside] = np.clip(np.rint(colours[inside]), 0, 255).astype(np.uint8)
    crop[stroke.astype(bool)] = line_colour
    own[inside | stroke.astype(bool)] = idx


def _place(rng: np.random.Generator, cfg: ShapesConfig, placed: list[_Shape]) -> tuple[np.ndarray, float]:
    """Centre and circumradius of the next shape; with probability ``occlusion`` it overlaps an earlier one."""
    lo, hi = cfg.size_range
    radius = 0.5 * cfg.imgsz * math.exp(float(rng.uniform(math.log(lo), math.log(hi))))
    if placed and rng.random() < cfg.occlusion:
        other = placed[int(rng.integers(0, len(placed)))]
        angle = float(rng.uniform(0, 2 * math.pi))
        dist = float(rng.uniform(0.3, 1.0)) * (other.radius + radius)
        centre = other.centre + dist * np.array([math.cos(angle), math.sin(angle)])
    else:
        centre = rng.uniform(0, cfg.imgsz, 2)
    # the centre (keypoint 4) stays in the image, so every labelled instance has a keypoint to learn
    return np.clip(centre, 0.5, cfg.imgsz - 0.5), radius


def _photometric(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Global contrast/brightness, blur on ~30 % of images, Gaussian noise."""
    alpha, beta = float(rng.uniform(0.75, 1.15)), float(rng.uniform(-25, 25))
    lut = np.clip(np.rint(np.arange(256) * alpha + beta), 0, 255).astype(np.uint8)
    img = lut[img]
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.4)))
    sigma = noise * 255 * float(rng.uniform(0, 1)) ** 2  # most images mildly noisy, few at full level
    if sigma > 0:
        noisy = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma) + img
        img = np.clip(np.rint(noisy, out=noisy), 0, 255, out=noisy).astype(np.uint8)
    return img


# ----------------------------------------------------------------------------------------------- labels


def _clean_mask(mask: np.ndarray) -> np.ndarray:
    """Drop tiny fragments (< 2 % of the region or < 8 px) that occlusion can leave behind."""
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(8, 0.02 * areas.sum())) + 1
    return np.isin(comp, keep)


def _splice(merged: np.ndarray, rings: list[np.ndarray]) -> np.ndarray:
    """Join rings into ``merged`` one at a time, nearest first, each by a zero-width bridge."""
    while rings:
        best = None
        for r, ring in enumerate(rings):
            d = ((merged[:, None, :] - ring[None, :, :]) ** 2).sum(-1)
            i, j = np.unravel_index(int(d.argmin()), d.shape)
            if best is None or d[i, j] < best[0]:
                best = (d[i, j], r, i, j)
        _, r, i, j = best
        ring = rings.pop(r)
        merged = np.concatenate([merged[:i + 1], ring[j:], ring[:j + 1], merged[i:]])
    return merged


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One ring (M, 2) of pixel indices whose ``cv2.fillPoly`` reproduces ``mask``, holes and parts included."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    rings = []
    for contour in contours:
        ring = cv2.approxPolyDP(contour, POLY_EPS, True).reshape(-1, 2)
        rings.append(ring if len(ring) >= 3 else contour.reshape(-1, 2))
    if not rings:
        return None
    first = int(np.argmax([cv2.contourArea(c) for c in contours]))
    polygon = _splice(rings.pop(first), rings)
    return polygon if len(polygon) >= 3 else None


def _visibility(kpts: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Visibility 0 outside the image, 2 where visible pixels come within 2 px, else 1 (covered)."""
    h, w = visible.shape
    v = np.zeros(len(kpts), np.int64)
    for k, (x, y) in enumerate(kpts):
        if not (0 <= x < w and 0 <= y < h):
            continue
        px, py = int(x), int(y)
        v[k] = 2 if visible[max(py - 2, 0):py + 3, max(px - 2, 0):px + 3].any() else 1
    return v


def _label_line(shape: _Shape, visible: np.ndarray, polygon: np.ndarray, box: tuple[int, ...]) -> str:
    h, w = visible.shape
    x1, y1, x2, y2 = box
    values = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
    fields = [str(shape.cls)] + [f"{v:.6f}" for v in values]
    kpts = shape_keypoints(shape.outline, shape.centre)
    for (x, y), v in zip(kpts, _visibility(kpts, visible)):
        fields += [f"{x / w:.6f}", f"{y / h:.6f}", str(v)] if v else ["0", "0", "0"]
    fields += [f"{c:.6f}" for x, y in polygon for c in (x / w, y / h)]
    return " ".join(fields)


def _visible_region(shape: _Shape, idx: int, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """Full-size visible mask, polygon and pixel box (x1 y1 x2 y2, exclusive end) of a shape, or None
    when too little of it remains visible."""
    if shape.box is None:
        return None
    x0, y0, x1, y1 = shape.box
    crop = _clean_mask(owner[y0:y1, x0:x1] == idx)
    ys, xs = np.nonzero(crop)
    if len(xs) < max(1, MIN_VISIBLE_FRACTION * _polygon_area(shape.outline)):
        return None
    if xs.max() - xs.min() + 1 < MIN_SIDE_PX or ys.max() - ys.min() + 1 < MIN_SIDE_PX:
        return None
    polygon = mask_polygon(crop)
    if polygon is None:
        return None
    visible = np.zeros(owner.shape, bool)
    visible[y0:y1, x0:x1] = crop
    box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    return visible, polygon + (x0, y0), tuple(int(v) for v in box)


def _labels(shapes: list[_Shape], owner: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Label lines and visible masks of the shapes that remain visible enough in the final drawing."""
    lines, masks = [], []
    for idx, shape in enumerate(shapes):
        region = _visible_region(shape, idx, owner)
        if region is not None:
            lines.append(_label_line(shape, *region))
            masks.append(region[0])
    return lines, masks


# ----------------------------------------------------------------------------------------------- images


def render_sample(seed: int, split_id: int, index: int, cfg: ShapesConfig = ShapesConfig()) -> Sample:
    """Render image ``index`` of split ``split_id`` (0 train, 1 val); a pure function of its arguments."""
    rng = np.random.default_rng([seed, split_id, index])
    img = _background(rng, cfg.imgsz)
    _draw_clutter(img, rng, cfg.clutter)
    owner = np.full(img.shape[:2], -1, np.int16)
    shapes: list[_Shape] = []
    n = 0 if index % BACKGROUND_EVERY == BACKGROUND_EVERY // 2 else int(
        rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(n):
        centre, radius = _place(rng, cfg, shapes)
        shape = _make_shape(int(rng.integers(0, len(NAMES))), centre, radius, rng)
        _draw_shape(img, owner, len(shapes), shape, rng)
        shapes.append(shape)
    lines, masks = _labels(shapes, owner)
    return Sample(_photometric(img, rng, cfg.noise), lines, masks)


def _write_sample(task: tuple[Path, int, int, int, ShapesConfig]) -> int:
    root, seed, split_id, index, cfg = task
    sample = render_sample(seed, split_id, index, cfg)
    split, name = SPLITS[split_id], f"{index:06d}"
    ok, jpg = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {split}/{name}")
    (root / "images" / split / f"{name}.jpg").write_bytes(jpg.tobytes())
    text = "".join(line + "\n" for line in sample.lines)
    (root / "labels" / split / f"{name}.txt").write_text(text, encoding="ascii", newline="\n")
    return len(sample.lines)


# ----------------------------------------------------------------------------------------------- dataset


def _arguments(**kwargs) -> dict:
    """All generation arguments (defaults filled in, JSON-normalised), without ``root`` and ``workers``."""
    bound = _SIGNATURE.bind(None, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    del args["root"], args["workers"]
    ints = ("n_train", "n_val", "imgsz", "seed", "min_objects", "max_objects")
    out = {k: int(args[k]) for k in ints}
    out.update({k: float(args[k]) for k in ("clutter", "noise", "occlusion")})
    out["size_range"] = [float(v) for v in args["size_range"]]
    return out


def _check(args: dict) -> None:
    lo, hi = args["size_range"]
    problems = [
        (min(args["n_train"], args["n_val"]) < 0, "n_train and n_val must be >= 0"),
        (args["imgsz"] < 32, "imgsz must be >= 32"),
        (not 0 <= args["min_objects"] <= args["max_objects"], "need 0 <= min_objects <= max_objects"),
        (not 0 < lo <= hi <= 1, "need 0 < size_range[0] <= size_range[1] <= 1"),
        (min(args["clutter"], args["noise"]) < 0, "clutter and noise must be >= 0"),
        (not 0 <= args["occlusion"] <= 1, "occlusion must be in [0, 1]"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(f"generate_shapes: {message}")


def _owned(root: Path) -> bool:
    """Whether the generator made ``root``: its marker, or the dataset.json of a generation from before markers."""
    if (root / MARKER).is_file():
        return True
    try:
        meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == "shapes"


def _claim(root: Path) -> None:
    """Make ``root`` the generator's, refusing a folder of other files: regenerating deletes files by their
    names (000000.jpg, ...), which a user's own dataset may share, so it only ever works in its own folders."""
    if root.exists() and not root.is_dir():
        raise GeneratorTargetError(f"{root} is a file; the shapes generator needs a folder")
    if root.is_dir() and not _owned(root):
        others = sorted(p.name for p in root.iterdir() if p.name not in (MARKER, _LOCK))
        if others:
            listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise GeneratorTargetError(
                f"{root} is not empty ({listed}) and was not made by the shapes generator (no {MARKER} file); "
                "it generates only into a new or empty folder, so that it never deletes files it did not write: "
                "give another path, or a relative one (a folder in the datasets cache)")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by yolostitch.data.shapes; regenerating deletes its files here\n",
                               encoding="utf-8")


def _clear(root: Path) -> None:
    """Remove a previous generation's files (only the generator's own names), so no stale image survives."""
    (root / "dataset.json").unlink(missing_ok=True)
    for tmp in root.glob(".dataset.json.*.tmp"):
        tmp.unlink()
    for split in SPLITS:
        (root / "labels" / f"{split}.cache.npz").unlink(missing_ok=True)  # the scan cache
        for sub in ("images", "labels"):
            folder = root / sub / split
            folder.mkdir(parents=True, exist_ok=True)
            for f in folder.iterdir():
                if _FILE.match(f.name) and f.is_file():
                    f.unlink()


def _write_json_atomic(path: Path, content: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def generate_shapes(root: str | Path, *, n_train: int = 512, n_val: int = 128, imgsz: int = 320, seed: int = 0,
                    min_objects: int = 2, max_objects: int = 8, size_range: tuple[float, float] = (0.06, 0.35),
                    clutter: float = 0.5, noise: float = 0.04, occlusion: float = 0.35, workers: int = 0) -> Path:
    """Write the shapes dataset to ``root`` (images/, labels/, then dataset.json last); return ``root``.

    Files of an earlier generation are removed first; ``root`` must be new, empty or made by this generator
    (:class:`GeneratorTargetError` otherwise). ``size_range``: circumscribed diameter as a fraction of
    ``imgsz`` (drawn log-uniformly); ``clutter``: mean number of distractors / 10; ``noise``: the largest
    Gaussian noise std as a fraction of 255 (each image: ``noise * u**2``, u uniform in [0, 1]);
    ``occlusion``: probability that a shape is placed overlapping an earlier one. ``workers > 0`` renders in a
    process pool; the files are identical either way.
    """
    root = Path(root)
    args = _arguments(n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed, min_objects=min_objects,
                      max_objects=max_objects, size_range=size_range, clutter=clutter, noise=noise,
                      occlusion=occlusion)
    _check(args)
    _claim(root)
    cfg = ShapesConfig(args["imgsz"], args["min_objects"], args["max_objects"], tuple(args["size_range"]),
                       args["clutter"], args["noise"], args["occlusion"])
    _clear(root)
    tasks = [(root, seed, s, i, cfg) for s, n in enumerate((n_train, n_val)) for i in range(n)]
    if workers > 0 and len(tasks) > 1:
        import multiprocessing
        with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
            counts = pool.map(_write_sample, tasks, chunksize=8)
    else:
        counts = [_write_sample(t) for t in tasks]
    instances = {"train": sum(counts[:n_train]), "val": sum(counts[n_train:])}
    _write_json_atomic(root / "dataset.json", {
        "generator": "shapes", "version": VERSION, "args": args, "names": NAMES, "kpt_shape": KPT_SHAPE,
        "flip_idx": FLIP_IDX, "images": {"train": n_train, "val": n_val}, "instances": instances})
    return root


_SIGNATURE = inspect.signature(generate_shapes)


def _up_to_date(root: Path, args: dict) -> bool:
    try:
        meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("generator") != "shapes" or meta.get("version") != VERSION or meta.get("args") != args:
        return False
    last = [(s, n - 1) for s, n in zip(SPLITS, (args["n_train"], args["n_val"])) if n]
    return all((root / sub / s / f"{i:06d}.{ext}").is_file()
               for s, i in last for sub, ext in (("images", "jpg"), ("labels", "txt")))


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if absent) for the block, across processes:
    ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows (no lock where neither exists). The lock goes
    with the process, so a killed generator leaves nothing stale behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            yield
            return
        try:
            import msvcrt
        except ImportError:
            yield
            return
        f.seek(0)
        while True:
            try:
                msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)  # retries for ~10 s, then raises
                break
            except OSError:
                continue
        try:
            yield
        finally:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def ensure_shapes(root: str | Path, **kwargs) -> Path:
    """Generate the dataset at ``root`` unless dataset.json there records the same arguments and version.

    Safe with several processes (e.g. the ranks of a torchrun job, or two trainings started at once): one
    generates under a lock file in ``root`` while the others wait, then find the dataset up to date.
    """
    root = Path(root)
    args = _arguments(**kwargs)
    if _up_to_date(root, args):
        return root
    _claim(root)  # before the lock file is made: a folder of other files is left untouched
    with _exclusive(root / _LOCK):
        if _up_to_date(root, args):  # made by another process while this one waited
            return root
        logger.info(f"generating the built-in dataset in {root} ({args['n_train']} train + {args['n_val']} val "
                    "images; once, later runs reuse it)")  # the first use takes seconds: say why
        return generate_shapes(root, **kwargs)
