"""Augmentation pipelines built from ultralytics' transforms (pinned version), which move boxes, polygons
and keypoints together, clip or drop what leaves the image, and mark keypoints that leave as invisible.

ultralytics' dataset refuses polygons and keypoints together; its transforms do not, provided every image
carries both. So a dataset with any masks gives each instance a polygon (its box outline when it has none:
under any affine or perspective map the box of the transformed outline equals the transformed box), and a
second ``cls`` column marks which polygons are real. Transforms index ``cls`` row-wise, so the mark follows
each instance through mosaic, copy-paste, mixup and filtering.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from ultralytics.data.augment import Compose, CopyPaste, MixUp, Mosaic, RandomFlip, RandomHSV, RandomPerspective

from .letterbox import LetterboxLabels

# stock YOLOv5 hyp.scratch-low.yaml augmentation values
DEFAULT_AUGMENT: dict[str, float] = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0,
    "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0,
}


class Perspective(RandomPerspective):
    """ultralytics' RandomPerspective with two shortcuts that keep what it does to labels.

    - The polygon -> box step is vectorised (:func:`polygon_boxes`): ultralytics computes each polygon's exact
      box (of its part inside the image) in a Python loop; doing all at once gives the same boxes (a test pins it).
    - A pure scale + translation (the default: no rotation, shear or perspective) whose source region lies inside
      the image is drawn by ``cv2.resize`` of that region instead of ``cv2.warpAffine`` of the whole mosaic,
      ~2.5x faster. ``resize`` samples source pixel ``(x + 0.5) / s - 0.5`` from the region's corner, so the drawn
      translation is moved by at most half a source pixel to put that corner on a whole pixel, and the moved
      matrix transforms the labels: image and labels stay exactly registered, and the pixels equal
      ``warpAffine``'s with that matrix to within rounding (:func:`resize_crop`).
    """

    def get_params(self, labels: dict[str, Any]) -> dict[str, Any]:
        params = super().get_params(labels)
        if not self.perspective:
            crop = resize_crop(params["M"], labels["img"].shape[:2], params["size"])
            if crop is not None:
                params["M"], params["crop"] = crop
        return params

    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        crop = (params or {}).get("crop")
        canvas = labels["img"]
        if crop is None:
            if isinstance(canvas, TiledCanvas):
                labels["img"] = canvas.region(0, 0, canvas.shape[1], canvas.shape[0])
            return super().apply_image(labels, params)
        x0, y0, nx, ny = crop
        s = float(params["M"][0, 0])
        w, h = params["size"]
        region = (canvas.region(x0, y0, nx, ny) if isinstance(canvas, TiledCanvas)
                  else canvas[y0:y0 + ny, x0:x0 + nx])
        img = cv2.resize(region, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        labels["img"] = img[:h, :w]
        labels["resized_shape"] = (h, w)
        return labels

    def apply_segments(self, segments: np.ndarray, M: np.ndarray, size: tuple[int, int]):
        n, points = segments.shape[:2]
        if n == 0:
            return [], segments
        xy = np.concatenate([segments.reshape(-1, 2), np.ones((n * points, 1), segments.dtype)], 1) @ M.T
        segments = (xy[:, :2] / xy[:, 2:3]).reshape(n, points, 2).astype(np.float32)
        boxes = polygon_boxes(segments, *size)
        if not self.preserve_obb:
            segments[..., 0] = segments[..., 0].clip(boxes[:, 0:1], boxes[:, 2:3])
            segments[..., 1] = segments[..., 1].clip(boxes[:, 1:2], boxes[:, 3:4])
        return boxes, segments


class TiledCanvas:
    """A mosaic canvas kept as its tiles: ``shape`` of the canvas, and per tile its (x1, y1, x2, y2) place on the
    canvas and the image view that fills it; the rest is grey (114). :class:`Perspective` draws only the
    region its resize samples, a third of the canvas on average, instead of filling all of it first."""

    ndim = 3

    def __init__(self, shape: tuple[int, int, int], tiles: list[tuple[tuple[int, int, int, int], np.ndarray]]):
        self.shape, self.tiles = shape, tiles

    def region(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """The canvas' pixels in [x0, x0 + width) x [y0, y0 + height), as a new array."""
        out = np.full((height, width, self.shape[2]), 114, np.uint8)
        for (x1, y1, x2, y2), tile in self.tiles:
            left, top = max(x1, x0), max(y1, y0)
            right, bottom = min(x2, x0 + width), min(y2, y0 + height)
            if right > left and bottom > top:
                out[top - y0:bottom - y0, left - x0:right - x0] = tile[top - y1:bottom - y1, left - x1:right - x1]
        return out


class TiledMosaic(Mosaic):
    """ultralytics' 4-image Mosaic (same draws, same labels) handing the next transform a :class:`TiledCanvas`
    instead of the filled 2s x 2s canvas. Only for a pipeline whose next step is :class:`Perspective`."""

    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.n != 4:
            return super().apply_image(labels, params)
        tiles = []
        for item in params["layout"]:
            view = item["labels_patch"]["img"][item["y1b"]:item["y2b"], item["x1b"]:item["x2b"]]
            tiles.append(((item["x1a"], item["y1a"], item["x2a"], item["y2a"]), view))
        labels["img"] = TiledCanvas((self.imgsz * 2, self.imgsz * 2, labels["img"].shape[2]), tiles)
        return labels


class HSV(RandomHSV):
    """ultralytics' RandomHSV, same draws and result, with one single-channel table lookup per channel.

    ultralytics looks up all three channels with one 3-channel table, which OpenCV does not vectorise: splitting,
    three single-channel lookups and merging (stock YOLOv5's way) is ~0.2 ms faster per 640 px image.
    """

    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        img = labels["img"]
        if img.shape[-1] != 3 or not (self.hgain or self.sgain or self.vgain):
            return labels
        gains = np.random.uniform(-1, 1, 3) * [self.hgain, self.sgain, self.vgain]
        x = np.arange(0, 256, dtype=gains.dtype)
        hue = ((x + gains[0] * 180) % 180).astype(img.dtype)
        sat = np.clip(x * (gains[1] + 1), 0, 255).astype(img.dtype)
        val = np.clip(x * (gains[2] + 1), 0, 255).astype(img.dtype)
        sat[0] = 0  # as ultralytics >= 8.3.79: pure white keeps its colour
        channels = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
        looked_up = [cv2.LUT(c, table, dst=c) for c, table in zip(channels, (hue, sat, val))]
        cv2.cvtColor(cv2.merge(looked_up), cv2.COLOR_HSV2BGR, dst=img)
        return labels


def resize_crop(M: np.ndarray, shape: tuple[int, int], size: tuple[int, int]
                ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """For an affine ``M`` that only scales (by s) and translates: the matrix with its translation moved by at most
    s / 2 output pixels so that ``cv2.resize`` by s of the source region (x0, y0, width, height) samples exactly
    where ``cv2.warpAffine`` with that matrix does, and the region; None for any other matrix, or when the output
    (``size`` w, h) would sample outside the (h, w) source ``shape`` (warpAffine's border then matters).

    Output pixel x samples source ``(x - tx) / s`` under warpAffine and ``x0 + (x + 0.5) / s - 0.5`` under
    resize of a region starting at x0; they agree when ``tx = 0.5 s - 0.5 - s x0``, so x0 is rounded from that.
    """
    s = float(M[0, 0])
    if not (M[0, 1] == 0 and M[1, 0] == 0 and M[1, 1] == M[0, 0] and s > 0 and M[2, 0] == 0 and M[2, 1] == 0
            and M[2, 2] == 1):
        return None
    w, h = size
    x0 = round((0.5 * s - 0.5 - float(M[0, 2])) / s)
    y0 = round((0.5 * s - 0.5 - float(M[1, 2])) / s)
    nx, ny = math.ceil((w + 1) / s) + 2, math.ceil((h + 1) / s) + 2  # resize's output then covers w x h
    if x0 < 0 or y0 < 0 or x0 + nx > shape[1] or y0 + ny > shape[0]:
        return None
    moved = M.copy()
    moved[0, 2], moved[1, 2] = 0.5 * s - 0.5 - s * x0, 0.5 * s - 0.5 - s * y0
    return moved, (x0, y0, nx, ny)


def polygon_boxes(polygons: np.ndarray, width: float, height: float) -> np.ndarray:
    """xyxy box of each closed polygon's part inside the image [0, width] x [0, height]; zeros if none.

    The part's extreme points are among: the vertices inside the image, the points where edges cross the
    image border, and the image corners the polygon covers. (n, P, 2) -> (n, 4).
    """
    x, y = polygons[..., 0], polygons[..., 1]  # numpy reduces (n, P) planes ~10x faster than (n, P, 2) over P
    lo, hi = np.stack([x.min(1), y.min(1)], 1), np.stack([x.max(1), y.max(1)], 1)
    boxes = np.concatenate([lo, hi], 1)
    inside = (lo >= 0).all(1) & (hi[:, 0] <= width) & (hi[:, 1] <= height)
    outside = (hi[:, 0] < 0) | (hi[:, 1] < 0) | (lo[:, 0] > width) | (lo[:, 1] > height)
    boxes[outside] = 0
    crossing = ~inside & ~outside
    if crossing.any():
        boxes[crossing] = _clipped_boxes(polygons[crossing], width, height)
    return boxes.astype(polygons.dtype)


def _clipped_boxes(polygons: np.ndarray, width: float, height: float) -> np.ndarray:
    n = len(polygons)
    x, y = polygons[..., 0], polygons[..., 1]
    inside = (x >= 0) & (y >= 0) & (x <= width) & (y <= height)
    candidates_x, candidates_y, valid = [x], [y], [inside]
    dx, dy = np.roll(x, -1, 1) - x, np.roll(y, -1, 1) - y
    with np.errstate(divide="ignore", invalid="ignore"):
        for border, along, delta, other, other_delta, limit, vertical in (
                (0.0, x, dx, y, dy, height, True), (width, x, dx, y, dy, height, True),
                (0.0, y, dy, x, dx, width, False), (height, y, dy, x, dx, width, False)):
            t = (border - along) / delta
            cross = other + t * other_delta
            ok = (t >= 0) & (t <= 1) & (cross >= 0) & (cross <= limit)
            candidates_x.append(np.full_like(x, border) if vertical else cross)
            candidates_y.append(cross if vertical else np.full_like(y, border))
            valid.append(ok)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    covered = _covers(polygons, corners)  # (n, 4)
    cx = np.concatenate(candidates_x + [np.broadcast_to(corners[:, 0], (n, 4))], 1)
    cy = np.concatenate(candidates_y + [np.broadcast_to(corners[:, 1], (n, 4))], 1)
    ok = np.concatenate(valid + [covered], 1)
    boxes = np.stack([np.where(ok, cx, np.inf).min(1), np.where(ok, cy, np.inf).min(1),
                      np.where(ok, cx, -np.inf).max(1), np.where(ok, cy, -np.inf).max(1)], 1)
    boxes[~ok.any(1)] = 0
    return boxes


def _covers(polygons: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd rule: does each polygon (n, P, 2) contain each point (k, 2)? -> (n, k)."""
    x1, y1 = polygons[..., 0][:, None], polygons[..., 1][:, None]  # (n, 1, P)
    x2, y2 = np.roll(x1, -1, 2), np.roll(y1, -1, 2)
    px, py = points[:, 0][None, :, None], points[:, 1][None, :, None]  # (1, k, 1)
    straddles = (y1 > py) != (y2 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    return ((straddles & (px < x_at)).sum(2) % 2) == 1


def train_transforms(dataset: Any, imgsz: int, hyp: dict[str, float] | None = None) -> Compose:
    """Stock YOLOv5's training order: mosaic (+ copy-paste) -> affine -> mixup -> HSV -> flips."""
    h = {**DEFAULT_AUGMENT, **(hyp or {})}
    affine = Perspective(degrees=h["degrees"], translate=h["translate"], scale=h["scale"], shear=h["shear"],
                           perspective=h["perspective"], size=(imgsz, imgsz))
    copy_paste = dataset.use_masks and h["copy_paste"] > 0  # pastes into the filled canvas
    steps = [(Mosaic if copy_paste else TiledMosaic)(dataset, imgsz=imgsz, p=h["mosaic"])]
    if copy_paste:
        steps.append(CopyPaste(dataset, p=h["copy_paste"], mode="flip"))
    steps.append(affine)
    pre = Compose(steps)
    flip_idx = dataset.flip_idx or []
    fliplr, flipud = h["fliplr"], h["flipud"]
    if dataset.use_keypoints and not flip_idx:  # without flip_idx a flip would swap left and right keypoints
        fliplr = flipud = 0.0
    return Compose([
        pre,
        MixUp(dataset, pre_transform=pre, p=h["mixup"]),
        HSV(hgain=h["hsv_h"], sgain=h["hsv_s"], vgain=h["hsv_v"]),
        RandomFlip(direction="vertical", p=flipud, flip_idx=flip_idx),
        RandomFlip(direction="horizontal", p=fliplr, flip_idx=flip_idx),
    ])


def val_transforms(imgsz: int) -> LetterboxLabels:
    """Letterbox to ``imgsz`` (or the batch's rect shape), never scaling up, as stock validation does."""
    return LetterboxLabels(imgsz, scaleup=False)
