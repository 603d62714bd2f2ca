"""COCO JSON annotations -> per-image :class:`~yolostitch.data.labels.ImageLabels`.

Mapping rules:

- categories, sorted by COCO id (the order COCO's own files list them in), become classes 0..nc-1;
  ``CocoSplit.category_ids[c]`` is class c's COCO id; :func:`coco_names` gives the same order, so a data
  YAML that leaves ``names`` out gets names that match these labels;
- every image entry gives one ``ImageLabels`` (no annotations: a background), sized by its JSON width/height;
  its ``file_name`` is looked for in the folders of :func:`~yolostitch.data.coco_source.image_folders`
  (``CocoSplit.folders``; an image found in none keeps its path under the first and the scan reports it);
- bbox ``[x, y, w, h]`` in pixels is clipped to the image and normalised to ``cx cy w h``;
- segmentation (polygon parts, or an RLE mask's outer contours) becomes one polygon per instance: parts are
  joined by zero-width bridges between their nearest vertices; no usable part (< 3 points, no area) -> no
  polygon, which is a partial label, not a problem;
- keypoints ``[x, y, v] * K`` are normalised, v kept, unlabelled points (v = 0) are ``(0, 0, 0)``; a labelled
  point further than ``COORD_TOLERANCE`` outside the image counts as unlabelled, one just outside is clipped;
- crowd annotations (``iscrowd: 1``) are skipped and counted in one problem; every other unusable entry is
  skipped with a :class:`~yolostitch.data.labels.Problem` (file = the JSON path). Bad annotations never raise.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from yolostitch.data.coco_source import ImageFinder, image_folders
from yolostitch.errors import DataError
from yolostitch.data.labels import COORD_TOLERANCE, ImageLabels, Problem, empty_labels

_MAX_LISTED_IDS = 5  # annotation ids quoted in a summary problem


@dataclass
class CocoSplit:
    """One COCO JSON file read as YOLO labels; ``labels`` and ``image_ids`` are aligned."""

    labels: list[ImageLabels]
    names: dict[int, str]  # class index -> category name
    category_ids: list[int]  # class index -> COCO category id (to write predictions back as COCO JSON)
    image_ids: list[int]
    problems: list[Problem] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # where images were looked for, in order


class _Bad(ValueError):
    """A field that cannot be used; the message says why."""


@dataclass
class _Image:
    id: int
    file_name: str
    width: int
    height: int
    anns: list[tuple[int, dict, str]] = field(default_factory=list)  # (class, annotation, name for messages)


def read_coco(json_path: str | Path, images_dir: str | Path | None = None,
              kpt_shape: Sequence[int] | None = None, root: str | Path | None = None) -> CocoSplit:
    """Read a COCO instances/keypoints JSON; see the module docstring for the rules.

    ``images_dir``: the one folder holding the images; ``root``: the dataset root, searched for COCO's layout.
    Both default to those a :class:`~yolostitch.data.coco_source.CocoSource` carries.
    Raises only when the file itself is unreadable or is not COCO (no ``images`` list).
    """
    if images_dir is None:
        images_dir = getattr(json_path, "images", None)
    if root is None:
        root = getattr(json_path, "root", None)
    path = Path(json_path)
    file = str(path)
    data = _parse_json(path.read_bytes(), file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{file}: not a COCO annotation file (expected an object with an 'images' list)")
    problems: list[Problem] = []

    def report(reason: str) -> None:
        problems.append(Problem(file, reason))

    category_ids, names = _read_categories(data.get("categories"), report)
    images, skipped_ids = _read_images(data["images"], report)
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        report("'annotations' is not a list; all images read as backgrounds")
        annotations = []
    class_of = {cid: i for i, cid in enumerate(category_ids)}
    _group_annotations(annotations, images, skipped_ids, class_of, report)

    folders = image_folders(path, images_dir, root)
    find = ImageFinder(folders)
    mismatched: dict[int, list[str]] = {}  # keypoint count -> annotations with it
    labels = [_image_labels(im, find(im.file_name), kpt_shape, report, mismatched) for im in images.values()]
    for count, where in mismatched.items():
        listed = ", ".join(where[:_MAX_LISTED_IDS]) + (", ..." if len(where) > _MAX_LISTED_IDS else "")
        report(f"{len(where)} annotation(s) have {count} keypoints but kpt_shape has {kpt_shape[0]}; "
               f"their keypoints are dropped ({listed})")
    return CocoSplit(labels, names, category_ids, list(images), problems, folders)


def coco_names(json_path: str | Path) -> dict[int, str]:
    """Class index -> name of a COCO JSON, without parsing its (much larger) images and annotations."""
    return _read_categories(coco_categories(json_path), lambda reason: None)[1]


def coco_keypoint_names(json_path: str | Path) -> list[str] | None:
    """The keypoint names of a COCO JSON's categories (``"keypoints": ["nose", "left_eye", ...]``), when the
    categories that have them agree; else None."""
    info = coco_keypoint_info(json_path)
    return info[0] if info else None


def coco_keypoint_info(json_path: str | Path) -> tuple[list[str], list[list[int]] | None] | None:
    """(keypoint names, skeleton as 0-based index pairs or None) of a COCO JSON's keypoint categories, when the
    categories that have keypoints agree; else None. COCO's ``skeleton`` counts keypoints from 1."""
    found = set()
    for c in coco_categories(json_path) or ():
        names = c.get("keypoints") if isinstance(c, dict) else None
        if isinstance(names, list) and names and all(isinstance(k, str) for k in names):
            raw = c.get("skeleton")
            pairs = None
            if isinstance(raw, list) and all(isinstance(p, list) and len(p) == 2 and all(_is_int(i) and
                                                                                        1 <= i <= len(names) for i in p)
                                             for p in raw):
                pairs = tuple((a - 1, b - 1) for a, b in raw)
            found.add((tuple(names), pairs))
    if len(found) != 1:
        return None
    names, pairs = found.pop()
    return list(names), ([list(p) for p in pairs] if pairs else None)


def coco_categories(json_path: str | Path) -> Any:
    """A COCO JSON's raw ``categories`` (None if it has none), parsing only that part when it can. Read once per
    file version: names, keypoint names and skeleton all come from here, and a COCO JSON can be 0.5 GB."""
    stat = Path(json_path).stat()
    return _categories(str(json_path), stat.st_mtime_ns, stat.st_size)


def _parse_json(data: bytes | str, file: str) -> Any:
    """``json.loads``, with a :class:`DataError` naming the file when it is not UTF-8 text or not JSON."""
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise DataError(f"{file}: not UTF-8 text (expected a COCO .json)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{file}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None


@functools.lru_cache(maxsize=16)
def _categories(json_path: str, mtime_ns: int, size: int) -> Any:
    try:
        text = Path(json_path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{json_path}: not UTF-8 text (expected a COCO .json)") from None
    starts = [m.end() - 1 for m in re.finditer(r'"categories"\s*:\s*\[', text)]
    categories = None
    if len(starts) == 1:  # a single key can only be the top-level one (keys inside strings are escaped)
        try:
            categories = json.JSONDecoder().raw_decode(text, starts[0])[0]
        except json.JSONDecodeError:
            pass
    if categories is None:
        data = _parse_json(text, json_path)
        categories = data.get("categories") if isinstance(data, dict) else None
    return categories


# ---------------------------------------------------------------------------------------------- entries


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    t = type(v)  # exact types: bool is not a number here, and this is on the hot path
    return t is int or (t is float and v - v == 0)  # v - v is nan for inf and nan


def _read_categories(raw: Any, report) -> tuple[list[int], dict[int, str]]:
    """Valid categories in ascending id order: (COCO ids, class index -> name)."""
    if not isinstance(raw, list):
        report("no 'categories' list; every annotation has an unknown category")
        return [], {}
    by_id: dict[int, str] = {}
    for n, cat in enumerate(raw):
        cid, name = (cat.get("id"), cat.get("name")) if isinstance(cat, dict) else (None, None)
        if not _is_int(cid) or not isinstance(name, str):
            report(f"categories[{n}]: needs an integer 'id' and a string 'name'; skipped")
        elif cid in by_id:
            report(f"categories[{n}]: duplicate category id {cid}; skipped")
        else:
            by_id[cid] = name
    ids = sorted(by_id)
    return ids, {i: by_id[cid] for i, cid in enumerate(ids)}


def _read_images(raw: list, report) -> tuple[dict[int, _Image], set]:
    """Usable image entries by id (JSON order), and the ids of entries skipped as unusable."""
    images: dict[int, _Image] = {}
    skipped: set = set()
    for n, im in enumerate(raw):
        if not isinstance(im, dict):
            report(f"images[{n}]: not an object; skipped")
            continue
        iid, name = im.get("id"), im.get("file_name")
        width, height = _pixels(im.get("width")), _pixels(im.get("height"))
        if not _is_int(iid):
            reason = f"id {iid!r:.40} is not an integer"
        elif iid in images:
            reason = f"duplicate image id {iid}"
        elif not isinstance(name, str) or not name:
            reason = "no 'file_name'"
        elif width is None or height is None:
            reason = "no valid 'width'/'height' (needed to normalise; images are not opened here)"
        else:
            images[iid] = _Image(iid, name, width, height)
            continue
        report(f"images[{n}]: {reason}; skipped with its annotations")
        if _is_int(iid) and iid not in images:
            skipped.add(iid)
    return images, skipped


def _pixels(v: Any) -> int | None:
    if _is_num(v) and v > 0 and v == int(v):
        return int(v)
    return None


def _group_annotations(annotations: list, images: dict[int, _Image], skipped_ids: set,
                       class_of: dict[int, int], report) -> None:
    """Attach each usable annotation to its image; count crowd ones into one problem."""
    crowd = orphans = 0
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            report(f"annotations[{n}]: not an object; skipped")
            continue
        aid = ann.get("id")
        where = f"annotation {aid}" if _is_int(aid) else f"annotations[{n}]"
        if ann.get("iscrowd") in (1, True):
            crowd += 1
            continue
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        image = images.get(image_id) if _is_int(image_id) else None
        if image is None:
            if _is_int(image_id) and image_id in skipped_ids:
                orphans += 1
            else:
                report(f"{where}: unknown image_id {image_id!r:.40}; skipped")
            continue
        cls = class_of.get(category_id) if _is_int(category_id) else None
        if cls is None:
            report(f"{where} (image {image.file_name}): unknown category_id {category_id!r:.40}; skipped")
            continue
        image.anns.append((cls, ann, where))
    if crowd:
        report(f"{crowd} crowd annotation(s) (iscrowd=1) skipped: YOLO training does not use crowd regions")
    if orphans:
        report(f"{orphans} annotation(s) of skipped image entries dropped")


# ----------------------------------------------------------------------------------------- annotations
# Polygons and keypoints are converted per image in a few array operations over all its instances: per-instance
# numpy calls would dominate the load time of a large JSON.

_NO_POLYGON = np.zeros((0, 2), np.float32)


def _image_labels(image: _Image, im_file: str, kpt_shape: Sequence[int] | None, report,
                  mismatched: dict[int, list[str]]) -> ImageLabels:
    shape = (image.height, image.width)
    size = (image.width, image.height)
    kept, boxes = [], []
    for c, ann, where in image.anns:
        try:
            boxes.append(_box(ann.get("bbox"), *size))
        except _Bad as e:
            report(f"{where} (image {image.file_name}): {e}; skipped")
            continue
        kept.append((c, ann, where))
    if not kept:
        return empty_labels(im_file, shape, kpt_shape)

    def bad(i: int, reason: str) -> None:
        report(f"{kept[i][2]} (image {image.file_name}): {reason}")

    segments = _segments([ann.get("segmentation") for _, ann, _ in kept], size, bad)
    keypoints = None
    if kpt_shape:
        k = int(kpt_shape[0])
        keypoints = _keypoints([ann.get("keypoints") for _, ann, _ in kept], k, size, bad,
                               lambda i, count: mismatched.setdefault(count, []).append(kept[i][2]))
    return ImageLabels(im_file, shape, np.array([c for c, _, _ in kept], np.int64),
                       np.array(boxes, np.float32), segments, keypoints)


def _box(raw: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` pixels -> normalised ``cx cy w h``, clipped to the image."""
    if not (isinstance(raw, (list, tuple)) and len(raw) == 4 and all(_is_num(v) for v in raw)):
        raise _Bad(f"bbox {raw!r:.60} is not [x, y, w, h]")
    x, y, w, h = raw
    x1, x2 = min(max(x, 0), width), min(max(x + w, 0), width)
    y1, y2 = min(max(y, 0), height), min(max(y + h, 0), height)
    if x2 <= x1 or y2 <= y1:
        raise _Bad(f"bbox {raw!r:.60} has no area inside the {width}x{height} image")
    return (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height


def _keypoints(raws: list, k: int, size: tuple[int, int], bad, mismatch) -> np.ndarray:
    """(N, k, 3) normalised x y v; instances without usable keypoints get zeros (and a problem if malformed)."""
    out = np.zeros((len(raws), k, 3), np.float32)
    rows, owners = [], []
    for i, raw in enumerate(raws):
        if raw is None:
            continue  # no keypoints: a partial label
        if not isinstance(raw, list) or len(raw) % 3:
            bad(i, f"keypoints {raw!r:.40} are not a flat list of x, y, v triples; kept without keypoints")
        elif len(raw) != 3 * k:
            mismatch(i, len(raw) // 3)
        else:
            rows.append(raw)
            owners.append(i)
    if not rows:
        return out
    values, ok = _number_rows(rows)
    kpts = values.reshape(-1, k, 3)
    v = kpts[..., 2]
    valid_v = ((v == 0) | (v == 1) | (v == 2)).all(1)
    for row in np.flatnonzero(~ok | ~valid_v):
        reason = ("keypoints are not all finite numbers" if not ok[row] else
                  f"keypoint visibility must be 0, 1 or 2, got {sorted(set(v[row].tolist()))}")
        bad(owners[row], reason + "; kept without keypoints")
    xy = kpts[..., :2] / size
    outside = ((xy < -COORD_TOLERANCE) | (xy > 1 + COORD_TOLERANCE)).any(-1)
    kpts = np.concatenate([_clip(xy, (1, 1)), v[..., None]], -1)
    kpts[(v == 0) | outside] = 0
    good = ok & valid_v
    out[np.array(owners)[good]] = kpts[good]
    return out


def _number_rows(rows: list[list]) -> tuple[np.ndarray, np.ndarray]:
    """Equal-length lists -> (float64 array, which rows were all finite numbers; the others are zeros)."""
    try:
        values = np.array(rows, np.float64)
        if values.ndim == 2:
            ok = np.isfinite(values).all(1)
            values[~ok] = 0
            return values, ok
    except (TypeError, ValueError):
        pass
    parsed = [_numbers(r) for r in rows]  # some row is malformed: find which, one at a time
    ok = np.array([p is not None and len(p) == len(r) for p, r in zip(parsed, rows)])
    values = np.zeros((len(rows), len(rows[0])))
    if ok.any():
        values[ok] = np.stack([p for p, good in zip(parsed, ok) if good])
    return values, ok


def _numbers(raw: list) -> np.ndarray | None:
    """A flat list of finite numbers as float64, else None."""
    try:
        values = np.array(raw, np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.ndim == 1 and np.isfinite(values).all() else None


# -------------------------------------------------------------------------------------------- polygons


def _segments(segs: list, size: tuple[int, int], bad) -> list[np.ndarray]:
    """One normalised (M, 2) polygon per instance ((0, 2) when none) from COCO polygons or RLE."""
    out = [_NO_POLYGON] * len(segs)
    parts, owners = [], []  # polygon parts (flat x, y lists) of all instances, and the instance of each
    for i, seg in enumerate(segs):
        if seg is None or (isinstance(seg, (list, dict)) and not seg):
            continue  # no segmentation: a partial label
        if isinstance(seg, dict):
            try:
                out[i] = _rle_polygon(seg)
            except _Bad as e:
                bad(i, f"{e}; kept without a polygon")
            continue
        if isinstance(seg, list):
            own = [seg] if _is_num(seg[0]) else seg  # a bare flat polygon is accepted as one part
            if all(isinstance(p, list) and len(p) % 2 == 0 for p in own):
                parts += [p for p in own if len(p) >= 6]  # fewer than 3 points: degenerate, dropped
                owners += [i] * (len(parts) - len(owners))
                continue
        bad(i, f"segmentation {seg!r:.40} is neither polygon lists [[x1, y1, ...], ...] nor RLE; "
               "kept without a polygon")
    if parts:
        _polygons_from_parts(parts, owners, size, out, bad)
    return out


def _polygons_from_parts(parts: list[list], owners: list[int], size: tuple[int, int],
                         out: list[np.ndarray], bad) -> None:
    """Clip, normalise and join the parts of all instances of one image, writing polygons into ``out``."""
    try:
        flat = np.fromiter(chain.from_iterable(parts), np.float64)
        usable = bool(np.isfinite(flat).all())
    except (TypeError, ValueError):
        usable = False
    if not usable:  # some part is malformed: drop its instance's polygon, keep the rest
        arrays = [_numbers(p) for p in parts]
        broken = sorted({o for o, a in zip(owners, arrays) if a is None})
        for i in broken:
            bad(i, "polygon coordinates are not all finite numbers; kept without a polygon")
        keep = [o not in broken for o in owners]
        parts = [a for a, k in zip(arrays, keep) if k]
        owners = [o for o, k in zip(owners, keep) if k]
        if not parts:
            return
        flat = np.concatenate(parts)
    points = _clip(flat.reshape(-1, 2), size)
    ends = np.cumsum([len(p) // 2 for p in parts])
    starts = np.concatenate([[0], ends[:-1]])
    areas = _areas(points, starts, ends - starts)
    points = (points / size).astype(np.float32)
    by_owner: dict[int, list[np.ndarray]] = {}
    for owner, start, end, area in zip(owners, starts.tolist(), ends.tolist(), areas.tolist()):
        if area > 0:  # parts wholly outside the image or collinear have none
            by_owner.setdefault(owner, []).append(points[start:end])
    for owner, own in by_owner.items():
        out[owner] = own[0] if len(own) == 1 else join_parts(own, scale=size)


def _rle_polygon(seg: dict) -> np.ndarray:
    """Outer contours of an RLE mask joined into one normalised polygon (pixel centres as vertices)."""
    from pycocotools import mask as mask_utils  # imported here: only RLE needs it

    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_pixels(v) for v in size)):
        raise _Bad(f"RLE size {size!r:.40} is not [height, width]")
    h, w = int(size[0]), int(size[1])
    try:
        if isinstance(counts, list):  # uncompressed counts
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != h * w:
                raise ValueError("counts do not add up to height * width")
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": [h, w], "counts": counts}
        else:
            raise ValueError("counts are neither a list nor a string")
        with warnings.catch_warnings():  # pycocotools' numpy-2 DeprecationWarning (copy=False) is not ours
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = np.ascontiguousarray(mask_utils.decode(rle))
    except Exception as e:  # pycocotools raises several types for corrupt RLE
        raise _Bad(f"RLE cannot be decoded ({e})") from None
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [c.reshape(-1, 2) + 0.5 for c in contours if len(c) >= 3]
    parts = [p for p in parts if _areas(p, np.array([0]), np.array([len(p)]))[0] > 0]  # not 1-pixel lines
    if not parts:
        return _NO_POLYGON
    return (join_parts(parts) / (w, h)).astype(np.float32)


def _clip(points: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    return np.minimum(np.maximum(points, 0), frame)  # ndarray.clip's Python wrapper costs ~10x more


def _areas(points: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Shoelace area of each part (points[start:start + length]) of a concatenated (P, 2) array."""
    nxt = np.arange(1, len(points) + 1)
    nxt[starts + lengths - 1] = starts  # each part's last vertex connects back to its first
    x, y = points[:, 0], points[:, 1]
    cross = x * y[nxt] - y * x[nxt]
    return np.abs(np.add.reduceat(cross, starts)) / 2


def join_parts(parts: list[np.ndarray], scale: Sequence[float] = (1, 1)) -> np.ndarray:
    """Join polygon parts (each (M_i, 2)) into one polygon.

    Parts are attached nearest-first (a minimum spanning tree, Prim's order). Each is attached by a bridge
    from the nearest vertex of the polygon so far to its own nearest vertex, walked there and back: the
    bridge has no area, so the filled result covers exactly the parts. ``scale`` turns coordinates into the
    units "nearest" is measured in (pixels for normalised parts).
    """
    scale = np.asarray(scale, np.float64)
    merged, rest = parts[0], list(parts[1:])
    # per remaining part: squared distance to the polygon so far, the vertex it attaches to, its own vertex
    links = [_nearest(merged, part, scale) for part in rest]
    while rest:
        k = min(range(len(rest)), key=lambda i: links[i][0])
        part, (_, anchor, j) = rest.pop(k), links.pop(k)
        i = int(np.flatnonzero((merged == anchor).all(1))[0])
        merged = np.concatenate([merged[:i + 1], part[j:], part[:j + 1], merged[i:]])
        links = [min(link, _nearest(part, other, scale), key=lambda t: t[0]) for link, other in zip(links, rest)]
    return merged


def _nearest(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> tuple[float, np.ndarray, int]:
    """(squared distance, vertex of a, index in b) of the closest pair of vertices between a and b."""
    d = (((a[:, None, :] - b[None, :, :]) * scale) ** 2).sum(-1)
    i, j = divmod(int(d.argmin()), d.shape[1])
    return float(d[i, j]), a[i], j
