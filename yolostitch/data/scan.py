"""Scan a dataset split: find images, verify them, read their labels, report everything skipped.

The same scan feeds training, ``val.py`` and ``yolostitch check-data``, which all report what it skipped as
``skipped <file>: <reason>`` lines (:func:`skipped_line`). Nothing in a dataset stops a run: a corrupt image, a
malformed line or a label file without an image is reported (:class:`Problem`) and skipped, and all else is
kept. An image whose label file has text but no usable line is skipped too (as stock YOLOv5 does), not read as a
background; an empty label file, or none, is a background. Only a split left with no usable image at all is an
error (:func:`require_images`). Results are cached beside the labels, keyed on every file's path, size and
modification time, so a changed file triggers a rescan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .labels import ImageLabels, Problem, empty_labels, labels_from_lines, parse_label_text

if TYPE_CHECKING:
    from .config import DataConfig

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"}
CACHE_VERSION = 2  # 2: label files without a usable line skip their image; truthful reasons for non-images
_EXIF_ORIENTATION = 274

logger = logging.getLogger(__name__)


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


def skipped_line(problem: Problem) -> str:
    """The one line that reports a skipped file, the same in train.py, val.py and check-data."""
    return f"skipped {problem.file}: {problem.reason}"


def report_skipped(problems: Iterable[Problem]) -> None:
    """Log each problem as a :func:`skipped_line` (INFO: on stdout under the command line)."""
    for p in problems:
        logger.info(skipped_line(p))


def require_images(data: DataConfig, split: str, sources: Sequence[Path], scan: SplitScan) -> None:
    """Raise a :class:`~yolostitch.errors.DataError` if the split has no usable image: training on it would
    end in a sampler error and validating on it would print zeros."""
    if scan.labels:
        return
    where = ", ".join(map(str, sources))
    if scan.problems:
        first = scan.problems[0]
        detail = (f"{len(scan.problems)} problem{'s' * (len(scan.problems) > 1)} reported, e.g. "
                  f"{first.file}: {first.reason}")
    else:
        detail = "no image files (.jpg, .png, ...) found"
    raise DataError(f"{data.source}: '{split}' ({where}) holds no readable images ({detail})")


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
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            return [], [Problem(str(source), "not UTF-8 text (expected a list of image paths, one a line); skipped")]
        for line in text.splitlines():
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
    except NotAnImage as e:
        return None, [Problem(str(image), f"{e}; skipped")]
    except Exception as e:  # any decoder error is a corrupt image
        return None, [Problem(str(image), f"unreadable image ({e}); skipped")]
    if not label_file.is_file():
        return empty_labels(str(image), shape, kpt_shape), []
    try:
        text = label_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, [Problem(str(label_file), "not UTF-8 text (expected YOLO label lines); image skipped")]
    except OSError as e:
        return None, [Problem(str(label_file), f"unreadable ({e}); image skipped")]
    lines, problems = parse_label_text(text, str(label_file), nc, kpt_shape)
    if problems and not lines:  # labelled objects that cannot be read: not a picture of nothing
        first = problems[0].reason.removesuffix("; line skipped")
        more = f"; {len(problems) - 1} more bad line{'s' * (len(problems) > 2)}" if len(problems) > 1 else ""
        return None, [Problem(str(label_file), f"no valid label line ({first}{more}); image skipped")]
    return labels_from_lines(str(image), shape, lines, kpt_shape), problems


class NotAnImage(ValueError):
    """A file named as an image that holds no image at all (empty, or in no format Pillow knows)."""


def _pillow_open() -> Callable | None:
    """Pillow's own ``Image.open``, or None if it cannot be found.

    ultralytics replaces ``PIL.Image.open`` with a wrapper that, on a file Pillow cannot identify, calls its
    ``check_requirements("pi-heif")``: that runs ``pip install pi-heif`` (or ``uv pip install``) when ultralytics
    believes it is online and then reports the missing module instead of the file's fault. The wrapper keeps
    the original as ``_image_open``."""
    opener = Image.open
    for _ in range(4):  # wrappers of wrappers
        if getattr(opener, "__module__", None) == Image.__name__:
            return opener
        opener = getattr(opener, "__globals__", {}).get("_image_open")
        if opener is None:
            break
    return None


def _open_image(path: Path) -> Image.Image:
    """Open an image for :func:`verify_image` without letting a wrapper of ``Image.open`` install anything."""
    opener = _pillow_open()
    if opener is None:  # an unknown wrapper: only let files that decode reach it
        if cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED) is None:
            raise NotAnImage("not an image (cannot identify the image format)")
        opener = Image.open
    try:
        return opener(path)
    except UnidentifiedImageError:
        raise NotAnImage("not an image (cannot identify the image format)") from None


def verify_image(path: Path) -> tuple[int, int]:
    """(height, width) as loaders see it (EXIF rotation applied); raises on a corrupt or truncated image
    (:class:`NotAnImage` on an empty file or one in no image format)."""
    if os.path.getsize(path) == 0:
        raise NotAnImage("empty file (0 bytes)")
    with _open_image(path) as im:
        im.verify()
    with _open_image(path) as im:
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


def scan_data_split(data: DataConfig, sources: Sequence[Path], cache: bool = True, split: str | None = None
                    ) -> SplitScan:
    """:func:`scan_split` for a :class:`~.config.DataConfig`; under ``--single-cls`` (``data.label_nc`` set)
    the labels are checked against the data's own classes, then every instance becomes class 0.

    A split with no usable image is a :class:`~yolostitch.errors.DataError` (its problems reported first);
    ``split`` names it in that message (default: the data's split whose source list this is)."""
    result = scan_split(sources, data.label_nc or data.nc, data.kpt_shape, cache=cache)
    if not result.labels:
        report_skipped(result.problems)
        name = split or next((k for k, v in data.splits.items() if v is sources), None) or next(
            (k for k, v in data.splits.items() if list(v) == list(sources)), "?")
        require_images(data, name, sources, result)
    if data.label_nc:
        result.labels = [replace(lab, cls=np.zeros_like(lab.cls)) for lab in result.labels]
    return result
