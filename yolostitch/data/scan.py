"""Scan a dataset split: find images, verify them, read their labels, report everything skipped.

The same scan feeds training and ``yolostitch check-data``. Nothing in a dataset stops a run: a corrupt
image, a malformed line or a label file without an image is reported (:class:`Problem`) and skipped, and all
else is kept. Results are cached beside the labels, keyed on every file's path, size and modification time,
so a changed file triggers a rescan.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from PIL import Image

from .labels import ImageLabels, Problem, empty_labels, labels_from_lines, parse_label_text

if TYPE_CHECKING:
    from .config import DataConfig

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"}
CACHE_VERSION = 1
_EXIF_ORIENTATION = 274


@dataclass
class SplitScan:
    """The usable images of a split with their labels, and what was skipped."""

    labels: list[ImageLabels] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def summary(self, names: dict[int, str] | None = None) -> dict:
        """Counts over unique images: the figures ``check-data`` prints."""
        unique = {lab.im_file: lab for lab in self.labels}.values()
        classes = Counter(int(c) for lab in unique for c in lab.cls)
        return {
            "images": len(unique),
            "backgrounds": sum(len(lab) == 0 for lab in unique),
            "instances": sum(len(lab) for lab in unique),
            "masks": int(sum(lab.has_mask.sum() for lab in unique)),
            "keypoint_instances": int(sum(lab.has_keypoints.sum() for lab in unique)),
            "skipped": [p.as_dict() for p in self.problems],
            "classes": {(names or {}).get(c, str(c)): n for c, n in sorted(classes.items())},
        }


def label_path(image: Path) -> Path:
    """Stock rule: the last ``images`` folder in the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def scan_split(sources: Sequence[Path], nc: int | None, kpt_shape: Sequence[int] | None = None,
               cache: bool = True, workers: int = 8) -> SplitScan:
    """Scan every source (folder, .txt list of images, COCO .json) of one split."""
    result = SplitScan()
    images: list[Path] = []
    for source in sources:
        if source.suffix == ".json":
            _scan_coco(source, nc, kpt_shape, result)
            continue
        found, problems = _list_images(source)
        result.problems += problems
        images += found
        if source.is_dir():
            result.problems += _orphan_labels(source, found)
    if images:
        part = _scan_images(images, nc, kpt_shape, cache, workers)
        result.labels += part.labels
        result.problems += part.problems
    return result


def _list_images(source: Path) -> tuple[list[Path], list[Problem]]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES), []
    if source.is_file() and source.suffix == ".txt":
        images, problems = [], []
        for line in source.read_text(encoding="utf-8").splitlines():
            if line.strip():
                p = Path(line.strip())
                p = p if p.is_absolute() else (source.parent / p)
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(p)
                else:
                    problems.append(Problem(str(source), f"{line.strip()!r} is not an image file; skipped"))
        return images, problems
    return [], [Problem(str(source), "split source not found (expected a folder, a .txt list or a .json)")]


def _orphan_labels(image_dir: Path, images: Iterable[Path]) -> list[Problem]:
    labels_dir = label_path(image_dir / "x.jpg").parent
    if not labels_dir.is_dir() or labels_dir == image_dir:
        return []
    expected = {label_path(p) for p in images}
    return [Problem(str(p), "label file without an image; not counted")
            for p in sorted(labels_dir.rglob("*.txt")) if p not in expected]


def _scan_images(images: list[Path], nc: int | None, kpt_shape: Sequence[int] | None, cache: bool,
                 workers: int) -> SplitScan:
    labels = [label_path(p) for p in images]
    key = _cache_key(images, labels, nc, kpt_shape)
    cache_file = labels[0].parent.with_suffix(".cache.npz") if cache else None
    if cache_file is not None:
        cached = load_cache(cache_file, key)
        if cached is not None:
            return cached
    with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1, len(images)))) as pool:
        results = list(pool.map(lambda pair: _scan_one(*pair, nc, kpt_shape), zip(images, labels)))
    scan = SplitScan()
    for labels_or_none, problems in results:
        if labels_or_none is not None:
            scan.labels.append(labels_or_none)
        scan.problems += problems
    if cache_file is not None:
        save_cache(cache_file, key, scan, kpt_shape)
    return scan


def _scan_one(image: Path, label_file: Path, nc: int | None, kpt_shape: Sequence[int] | None
              ) -> tuple[ImageLabels | None, list[Problem]]:
    try:
        shape = verify_image(image)
    except Exception as e:  # any decoder error is a corrupt image
        return None, [Problem(str(image), f"unreadable image ({e}); skipped")]
    if not label_file.is_file():
        return empty_labels(str(image), shape, kpt_shape), []
    try:
        text = label_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return empty_labels(str(image), shape, kpt_shape), [Problem(str(label_file), f"unreadable ({e}); "
                                                                                     "image kept as background")]
    lines, problems = parse_label_text(text, str(label_file), nc, kpt_shape)
    return labels_from_lines(str(image), shape, lines, kpt_shape), problems


def verify_image(path: Path) -> tuple[int, int]:
    """(height, width) as loaders see it (EXIF rotation applied); raises on a corrupt or truncated image."""
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1) if im.format in ("JPEG", "MPO", "TIFF") else 1
        fmt = im.format
    if width < 10 or height < 10:
        raise ValueError(f"image is {width}x{height}, smaller than 10 px")
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(-2, os.SEEK_END)
            if f.read() != b"\xff\xd9":
                raise ValueError("truncated JPEG (no end-of-image marker)")
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _scan_coco(source: Path, nc: int | None, kpt_shape: Sequence[int] | None, result: SplitScan) -> None:
    from .coco import read_coco

    split = read_coco(source, kpt_shape=kpt_shape)  # a CocoSource brings the YAML's image folder and root
    result.problems += split.problems
    missing = 0
    for lab in split.labels:
        if not Path(lab.im_file).is_file():
            missing += 1
            result.problems.append(Problem(lab.im_file, f"image listed in {source.name} not found; skipped"))
        elif nc is not None and len(lab) and lab.cls.max() >= nc:
            result.problems.append(Problem(lab.im_file, f"class index >= nc={nc}; image skipped"))
        else:
            result.labels.append(lab)
    if missing:
        result.problems.append(Problem(str(source), (
            f"{missing} of {len(split.labels)} images it lists not found in any folder searched: "
            f"{', '.join(split.folders)}; name their folder in the data YAML, e.g. "
            f"'<split>: {{json: .../{source.name}, images: FOLDER}}' (relative to 'path')")))


# --- cache: flat numpy arrays (no pickle), written atomically -------------------------------------------


def _cache_key(images: list[Path], labels: list[Path], nc: int | None, kpt_shape: Sequence[int] | None) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION} {nc} {list(kpt_shape or [])}".encode())
    for p in (*images, *labels):
        try:
            st = p.stat()
            h.update(f"{p} {st.st_size} {st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p} -\n".encode())
    return h.hexdigest()


def save_cache(path: Path, key: str, scan: SplitScan, kpt_shape: Sequence[int] | None) -> bool:
    labels = scan.labels
    segments = [s for lab in labels for s in lab.segments]
    k = kpt_shape[0] if kpt_shape else 0
    arrays = {
        "key": np.array(key),
        "im_files": np.array([lab.im_file for lab in labels], dtype=str),
        "shapes": np.array([lab.shape for lab in labels], np.int64).reshape(-1, 2),
        "counts": np.array([len(lab) for lab in labels], np.int64),
        "cls": np.concatenate([lab.cls for lab in labels] or [np.zeros(0, np.int64)]),
        "bboxes": np.concatenate([lab.bboxes for lab in labels] or [np.zeros((0, 4), np.float32)]),
        "seg_counts": np.array([len(s) for s in segments], np.int64),
        "seg_points": np.concatenate(segments or [np.zeros((0, 2), np.float32)]).astype(np.float32),
        "keypoints": np.concatenate([lab.keypoints for lab in labels if lab.keypoints is not None]
                                    or [np.zeros((0, k, 3), np.float32)]),
        "problems": np.array(json.dumps([p.as_dict() for p in scan.problems])),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return True
    except OSError:  # read-only dataset folder: scanning again next time is the only cost
        tmp.unlink(missing_ok=True)
        return False


def load_cache(path: Path, key: str) -> SplitScan | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            data = {name: z[name] for name in z.files}
    except (OSError, KeyError, ValueError):
        return None
    scan = SplitScan(problems=[Problem(**p) for p in json.loads(str(data["problems"]))])
    seg_ends = np.cumsum(data["seg_counts"])
    segments = np.split(data["seg_points"], seg_ends[:-1]) if len(seg_ends) else []
    has_kpts = data["keypoints"].shape[1] > 0
    start = 0
    for im_file, shape, n in zip(data["im_files"], data["shapes"], data["counts"]):
        end = start + int(n)
        scan.labels.append(ImageLabels(
            str(im_file), (int(shape[0]), int(shape[1])), data["cls"][start:end], data["bboxes"][start:end],
            list(segments[start:end]), data["keypoints"][start:end] if has_kpts else None))
        start = end
    return scan


def scan_data_split(data: DataConfig, sources: Sequence[Path], cache: bool = True) -> SplitScan:
    """:func:`scan_split` for a :class:`~.config.DataConfig`; under ``--single-cls`` (``data.label_nc`` set)
    the labels are checked against the data's own classes, then every instance becomes class 0."""
    result = scan_split(sources, data.label_nc or data.nc, data.kpt_shape, cache=cache)
    if data.label_nc:
        result.labels = [replace(lab, cls=np.zeros_like(lab.cls)) for lab in result.labels]
    return result
