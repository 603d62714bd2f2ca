"""Per-image labels and the YOLO txt line formats.

One line per instance, coordinates normalised to [0, 1] by image width/height. The form of a line is told
by its number of values, given the dataset's ``kpt_shape = [K, D]`` (D = 2: x y; D = 3: x y visibility):

=================  ==========================================  =============================
values             layout                                      carries
=================  ==========================================  =============================
5                  ``cls cx cy w h``                            box
5 + K*D            ``cls cx cy w h  k1x k1y [k1v] ...``         box + keypoints (pose)
odd, >= 7          ``cls x1 y1 x2 y2 x3 y3 ...``                polygon (box = its extent)
5 + K*D + 2M       ``cls cx cy w h  keypoints  x1 y1 ... xM yM``  box + keypoints + polygon
=================  ==========================================  =============================

The last is the **multi-task line** (M >= 3 polygon points). Without ``kpt_shape`` only the first and third
forms exist. With it, counts can coincide: a polygon line of exactly 5 + K*D values reads as a pose line, and
when 5 + K*D is odd (``[K, 2]``, or K*D even) a longer polygon line has a multi-task line's count; it is then
read as multi-task, and as a polygon only if that reading is invalid (e.g. visibilities not 0/1/2). In such
datasets write polygon-only instances as multi-task lines with all keypoint values 0. An instance whose keypoints all have visibility 0 carries no
keypoints (no keypoint loss); an instance without a polygon carries no mask. That is how partial labels work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

COORD_TOLERANCE = 0.01  # coordinates this far outside [0, 1] are clipped; further out, the line is rejected


@dataclass
class Problem:
    """Something skipped while reading a dataset, reported to the user; nothing else is lost."""

    file: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason}


@dataclass
class ImageLabels:
    """All instances of one image. Coordinates are normalised (x by width, y by height)."""

    im_file: str
    shape: tuple[int, int]  # (height, width) of the image on disk
    cls: np.ndarray  # (N,) int64
    bboxes: np.ndarray  # (N, 4) float32, cx cy w h
    segments: list[np.ndarray] = field(default_factory=list)  # N arrays (M, 2); (0, 2) when no polygon
    keypoints: np.ndarray | None = None  # (N, K, 3) float32 x y v (v: 0 absent, 1 occluded, 2 visible)

    def __post_init__(self) -> None:
        if not self.segments:
            self.segments = [np.zeros((0, 2), np.float32) for _ in range(len(self.cls))]

    def __len__(self) -> int:
        return len(self.cls)

    @property
    def has_mask(self) -> np.ndarray:
        return np.array([len(s) >= 3 for s in self.segments], dtype=bool)

    @property
    def has_keypoints(self) -> np.ndarray:
        if self.keypoints is None:
            return np.zeros(len(self), dtype=bool)
        return (self.keypoints[..., 2] > 0).any(-1)


def empty_labels(im_file: str, shape: tuple[int, int], kpt_shape: Sequence[int] | None) -> ImageLabels:
    kpts = np.zeros((0, kpt_shape[0], 3), np.float32) if kpt_shape else None
    return ImageLabels(im_file, shape, np.zeros(0, np.int64), np.zeros((0, 4), np.float32), [], kpts)


class LineError(ValueError):
    """A label line that cannot be used; the message says why."""


@dataclass
class ParsedLine:
    cls: int
    box: np.ndarray  # (4,) cx cy w h
    polygon: np.ndarray  # (M, 2), M == 0 when absent
    keypoints: np.ndarray | None  # (K, 3)


def parse_line(line: str, nc: int | None, kpt_shape: Sequence[int] | None) -> ParsedLine:
    """Parse one YOLO txt line (any form in the module docstring); raise :class:`LineError` if unusable."""
    parts = line.split()
    try:
        values = np.array([float(v) for v in parts], dtype=np.float64)
    except ValueError:
        raise LineError(f"non-numeric value in {line.strip()[:60]!r}") from None
    if not np.isfinite(values).all():
        raise LineError("non-finite value (nan/inf)")
    cls = values[0]
    if cls != int(cls) or cls < 0 or (nc is not None and cls >= nc):
        raise LineError(f"class {parts[0]} is not an integer in [0, {nc})" if nc else f"bad class {parts[0]}")
    n = len(values)
    k, d = (int(kpt_shape[0]), int(kpt_shape[1])) if kpt_shape else (0, 0)
    pose_len = 5 + k * d
    if kpt_shape and n > pose_len and n % 2 == 1 and (n - pose_len) % 2 == 0:  # multi-task or polygon?
        try:
            return _parse_values(values, nc, kpt_shape, as_polygon=False)
        except LineError:
            return _parse_values(values, nc, kpt_shape, as_polygon=True)
    return _parse_values(values, nc, kpt_shape, as_polygon=False)


def _parse_values(values: np.ndarray, nc: int | None, kpt_shape: Sequence[int] | None,
                  as_polygon: bool) -> ParsedLine:
    cls, n = values[0], len(values)
    k, d = (int(kpt_shape[0]), int(kpt_shape[1])) if kpt_shape else (0, 0)
    pose_len = 5 + k * d
    box, keypoints, polygon = None, None, np.zeros((0, 2))
    if as_polygon:
        polygon = values[1:].reshape(-1, 2)
    elif n == 5:
        box = values[1:5]
    elif kpt_shape and n == pose_len:
        box, keypoints = values[1:5], values[5:pose_len]
    elif kpt_shape and n > pose_len and (n - pose_len) % 2 == 0 and n - pose_len >= 6:
        box, keypoints, polygon = values[1:5], values[5:pose_len], values[pose_len:].reshape(-1, 2)
    elif n % 2 == 1 and n >= 7:
        polygon = values[1:].reshape(-1, 2)
    else:
        expected = "5 (box), an odd count >= 7 (polygon)"
        if kpt_shape:
            expected += f", {pose_len} (box + {k}x{d} keypoints) or {pose_len} + 2M (multi-task, M >= 3)"
        raise LineError(f"{n} values; expected {expected}")

    if len(polygon):
        polygon = _in_unit_range(polygon, "polygon")
    if box is None:
        lo, hi = polygon.min(0), polygon.max(0)
        box = np.concatenate([(lo + hi) / 2, hi - lo])
    else:
        box = _box_in_range(box)
    if box[2] <= 0 or box[3] <= 0:
        raise LineError(f"box has zero width or height ({box[2]:.4g} x {box[3]:.4g})")
    kpts = None
    if kpt_shape:
        kpts = np.zeros((k, 3))
        if keypoints is not None:
            kpts = _keypoints(keypoints.reshape(k, d))
    return ParsedLine(int(cls), box.astype(np.float32), polygon.astype(np.float32),
                      None if kpts is None else kpts.astype(np.float32))


def _in_unit_range(xy: np.ndarray, what: str) -> np.ndarray:
    if (xy < -COORD_TOLERANCE).any() or (xy > 1 + COORD_TOLERANCE).any():
        raise LineError(f"{what} coordinates outside [0, 1] (min {xy.min():.4g}, max {xy.max():.4g}); "
                        "labels must be normalised by image width/height")
    return xy.clip(0, 1)


def _box_in_range(box: np.ndarray) -> np.ndarray:
    cx, cy, w, h = box
    corners = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
    if w < 0 or h < 0:
        raise LineError(f"negative box size ({w:.4g} x {h:.4g})")
    corners = _in_unit_range(corners, "box")
    (x1, y1), (x2, y2) = corners
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def _keypoints(kpts: np.ndarray) -> np.ndarray:
    if kpts.shape[1] == 2:  # no visibility column: a point at (0, 0) is absent, others visible
        v = np.where((kpts == 0).all(1), 0.0, 2.0)
        kpts = np.concatenate([kpts, v[:, None]], 1)
    v = kpts[:, 2]
    if not np.isin(v, (0, 1, 2)).all():
        raise LineError(f"keypoint visibility must be 0, 1 or 2, got {sorted(set(v.tolist()))}")
    labelled = v > 0
    if labelled.any():
        kpts[labelled, :2] = _in_unit_range(kpts[labelled, :2], "keypoint")
    kpts[~labelled] = 0
    return kpts


def parse_label_text(text: str, file: str, nc: int | None, kpt_shape: Sequence[int] | None
                     ) -> tuple[list[ParsedLine], list[Problem]]:
    """Parse a label file's text: usable lines, and a problem for each skipped or duplicate line."""
    lines, problems, seen = [], [], set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed = parse_line(line, nc, kpt_shape)
        except LineError as e:
            problems.append(Problem(file, f"line {number}: {e}; line skipped"))
            continue
        key = " ".join(line.split())
        if key in seen:
            problems.append(Problem(file, f"line {number}: duplicate of an earlier line; skipped"))
            continue
        seen.add(key)
        lines.append(parsed)
    return lines, problems


def labels_from_lines(im_file: str, shape: tuple[int, int], lines: list[ParsedLine],
                      kpt_shape: Sequence[int] | None) -> ImageLabels:
    if not lines:
        return empty_labels(im_file, shape, kpt_shape)
    kpts = np.stack([p.keypoints for p in lines]) if kpt_shape else None
    return ImageLabels(im_file, shape, np.array([p.cls for p in lines], np.int64),
                       np.stack([p.box for p in lines]), [p.polygon for p in lines], kpts)
