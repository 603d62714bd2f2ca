"""One dataset for every task: per image, boxes, instance masks and keypoints, augmented together.

A sample is a dict: ``img`` (3, H, W) uint8 RGB; per instance ``cls`` (n,), ``bboxes`` (n, 4) normalised
cx cy w h, ``has_mask`` (n,); with masks ``masks`` (n, H/r, W/r) uint8; with keypoints ``keypoints``
(n, K, 3) normalised x y and visibility; and ``im_file``, ``ori_shape``, ``ratio_pad`` (for mapping
predictions back to the original image). :func:`collate` joins samples and adds ``batch_idx``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from ultralytics.utils.instance import Instances

from .augment import train_transforms, val_transforms
from .disk_cache import DiskCache
from .image_layout import rgb_chw
from .labels import ImageLabels

LOGGER = logging.getLogger("yolostitch")
SEGMENT_POINTS = 128  # polygons are resampled to this many points so instances stack; vertices are kept
OUTLINE_CACHE_BYTES = 256 * 2**20  # per process: resampled polygons kept between epochs
PER_INSTANCE = ("cls", "bboxes", "has_mask", "masks", "keypoints")
Placer = Callable[[str, tuple, torch.dtype], "torch.Tensor | None"]


@dataclass(frozen=True)
class InstanceField:
    """Extra per-instance label columns a task declares (see ``yolostitch.tasks.Task.instance_fields``):
    ``read(labels)`` gives one image's (instances, width) values; samples and batches carry them as ``name``."""

    name: str
    width: int
    read: Callable[[ImageLabels], np.ndarray]


class MultiTaskDataset(Dataset):
    """Images and labels from a scan, letterboxed (validation) or augmented (training)."""

    cache = "ram"  # tells ultralytics' Mosaic/MixUp to draw partner images from the whole dataset
    use_obb = False

    def __init__(self, labels: Sequence[ImageLabels], imgsz: int = 640, augment: bool = False,
                 hyp: dict[str, float] | None = None, kpt_shape: Sequence[int] | None = None,
                 flip_idx: Sequence[int] | None = None, mask_ratio: int = 4, use_masks: bool | None = None,
                 rect: bool = False, batch_size: int = 16, stride: int = 32, pad: float = 0.5,
                 cache_images: bool | str = False, cache_bytes: int = 2 * 2**30,
                 instance_fields: Sequence[InstanceField] = ()):
        self.labels = list(labels)
        self.instance_fields = list(instance_fields)
        self.imgsz, self.augment, self.mask_ratio = imgsz, augment, mask_ratio
        self.kpt_shape = list(kpt_shape) if kpt_shape else None
        self.flip_idx = list(flip_idx) if flip_idx else None
        self.use_keypoints = self.kpt_shape is not None
        self.use_masks = any(lab.has_mask.any() for lab in self.labels) if use_masks is None else use_masks
        self.rect_shapes = self._rect_shapes(batch_size, stride, pad) if rect else None
        self.transforms = train_transforms(self, imgsz, hyp) if augment else val_transforms(imgsz)
        self._warned: set[str] = set()
        self._outlines: dict[int, np.ndarray] = {}  # index -> resampled polygons (resampling is costly)
        self._outline_bytes = 0
        # stock's `--cache ram` (True or "ram"): decoded, resized images, read up front (DataLoader workers
        # forked later share them), as many as fit in cache_bytes; the rest are read from disk as usual.
        # `--cache disk`: decoded images as .npy files beside them (see disk_cache.py)
        mode = cache_mode(cache_images)
        self._disk = DiskCache() if mode == "disk" else None
        self._images: dict[int, np.ndarray] | None = {} if mode == "ram" else None
        self._image_bytes, self._cache_budget = 0, cache_bytes
        if mode == "ram":
            self._fill_image_cache()
        elif mode == "disk":
            cached = self._disk.fill(lab.im_file for lab in self.labels)
            size = f"{cached / 2**30:.1f} GB" if cached >= 2**30 else f"{cached / 2**20:.1f} MB"
            LOGGER.info(f"--cache disk: {size} of decoded images as .npy files beside them")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.to_sample(self.transforms(self.get_image_and_label(index)))

    # --- what ultralytics' transforms call ------------------------------------------------------------

    def get_image_and_label(self, index: int) -> dict[str, Any]:
        lab = self.labels[index]
        img, (h0, w0), (h, w) = self.load_image(index)
        if img is None:  # unreadable since the scan: a blank image with no instances, run goes on
            img, lab = np.full((h, w, 3), 114, np.uint8), _without_instances(lab)
        has_mask = lab.has_mask
        segments = self._outlines_of(index, lab) if self.use_masks else None
        keypoints = lab.keypoints.copy() if self.use_keypoints else None
        label = {
            "im_file": lab.im_file, "ori_shape": (h0, w0), "resized_shape": (h, w), "img": img,
            "ratio_pad": (h / h0, w / w0),
            "cls": self._class_columns(lab, has_mask),
            "instances": Instances(lab.bboxes.copy(), segments, keypoints, bbox_format="xywh", normalized=True),
        }
        if self.rect_shapes is not None:
            label["rect_shape"] = self.rect_shapes[index]
        return label

    def _class_columns(self, lab: ImageLabels, has_mask: np.ndarray) -> np.ndarray:
        """(n, 2 + extra) class, has-mask mark, then each task's extra label columns: transforms index ``cls``
        row-wise (mosaic concatenates it, affine filters it), so extra values follow their instance."""
        columns = [lab.cls[:, None], has_mask[:, None]]
        for f in self.instance_fields:
            values = np.asarray(f.read(lab), np.float32).reshape(len(lab), f.width)
            columns.append(values)
        return np.concatenate(columns, 1).astype(np.float32).reshape(-1, 2 + self._extra_width())

    def _extra_width(self) -> int:
        return sum(f.width for f in self.instance_fields)

    def _outlines_of(self, index: int, lab: ImageLabels) -> np.ndarray:
        """(N, SEGMENT_POINTS, 2) polygons; an instance without one gets its box outline (see augment.py)."""
        cached = self._outlines.get(index)
        if cached is not None and len(cached) == len(lab):
            return cached.copy()
        outlines = [s if len(s) >= 3 else _box_outline(b) for s, b in zip(lab.segments, lab.bboxes)]
        segments = (np.stack([resample_polygon(p, SEGMENT_POINTS) for p in outlines]) if outlines
                    else np.zeros((0, SEGMENT_POINTS, 2), np.float32))
        if self._outline_bytes + segments.nbytes <= OUTLINE_CACHE_BYTES:
            self._outlines[index] = segments
            self._outline_bytes += segments.nbytes
            return segments.copy()
        return segments

    def _fill_image_cache(self) -> None:
        """Decode in threads, store in index order from this thread until the budget is used."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for index, (img, _, _) in enumerate(pool.map(self._read_image, range(len(self)))):
                if img is None:
                    continue
                if self._image_bytes + img.nbytes > self._cache_budget:
                    break
                self._keep_image(index, img)

    def load_image(self, index: int) -> tuple[np.ndarray | None, tuple[int, int], tuple[int, int]]:
        """BGR image resized so its long side is ``imgsz`` (stock YOLOv5's rounding and interpolation)."""
        if self._images is not None and index in self._images:
            img = self._images[index]  # read-only: the transforms write only into arrays they made
            return img, self.labels[index].shape, img.shape[:2]
        img, shape0, size = self._read_image(index)
        if img is not None and self._images is not None and self._image_bytes + img.nbytes <= self._cache_budget:
            self._keep_image(index, img.copy())
        return img, shape0, size

    def _keep_image(self, index: int, img: np.ndarray) -> None:
        """Cache a decoded image, read-only: it is handed out without a copy (mosaic, affine, letterbox and
        copy-paste read it and make new arrays), so a transform that wrote into its input would raise, not
        silently change the cache."""
        img.setflags(write=False)
        self._images[index] = img
        self._image_bytes += img.nbytes

    def _read_image(self, index: int) -> tuple[np.ndarray | None, tuple[int, int], tuple[int, int]]:
        lab = self.labels[index]
        h0, w0 = lab.shape
        r = self.imgsz / max(h0, w0)
        size = (math.ceil(h0 * r), math.ceil(w0 * r)) if r != 1 else (h0, w0)
        img = self._disk.read(lab.im_file) if self._disk is not None else cv2.imread(lab.im_file)
        if img is None:
            if lab.im_file not in self._warned:
                self._warned.add(lab.im_file)
                LOGGER.warning(f"{lab.im_file}: could not be read any more; used as an empty background")
            return None, (h0, w0), size
        h0, w0 = img.shape[:2]
        if r != 1:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            img = cv2.resize(img, (size[1], size[0]), interpolation=interp)
        return img, (h0, w0), img.shape[:2]

    # --- sample formatting ---------------------------------------------------------------------------

    def to_sample(self, labels: dict[str, Any]) -> dict[str, Any]:
        img = labels["img"]
        h, w = img.shape[:2]
        instances: Instances = labels["instances"]
        instances.convert_bbox(format="xyxy")
        instances.denormalize(w, h)
        cls = labels["cls"].reshape(-1, 2 + self._extra_width())
        has_mask = cls[:, 1] > 0
        sample = {
            "img": torch.from_numpy(rgb_chw(img)),
            "cls": torch.from_numpy(cls[:, 0]).long(),
            "has_mask": torch.from_numpy(has_mask),
            "im_file": labels["im_file"], "ori_shape": labels["ori_shape"],
            "ratio_pad": _ratio_pad(labels),
        }
        if self.use_masks:
            sample["masks"] = torch.from_numpy(self._rasterise(instances.segments, has_mask, h, w))
        instances.convert_bbox(format="xywh")
        instances.normalize(w, h)
        sample["bboxes"] = torch.from_numpy(instances.bboxes.astype(np.float32)).reshape(-1, 4)
        if self.use_keypoints:
            sample["keypoints"] = torch.from_numpy(instances.keypoints.astype(np.float32))
        start = 2
        for f in self.instance_fields:
            sample[f.name] = torch.from_numpy(np.ascontiguousarray(cls[:, start:start + f.width]))
            start += f.width
        if self.instance_fields:
            sample["instance_fields"] = [f.name for f in self.instance_fields]
        return sample

    def _rasterise(self, segments: np.ndarray, has_mask: np.ndarray, h: int, w: int) -> np.ndarray:
        """One (h/r, w/r) mask per instance, drawn with sub-pixel precision; zeros where no real polygon."""
        r = self.mask_ratio
        masks = np.zeros((len(has_mask), h // r, w // r), np.uint8)
        shift = 4  # fixed-point fraction bits for cv2's sub-pixel drawing
        for i in np.flatnonzero(has_mask):
            points = np.round(segments[i] / r * (1 << shift) - (1 << (shift - 1))).astype(np.int32)
            cv2.fillPoly(masks[i], [points], 1, lineType=cv2.LINE_8, shift=shift)
        return masks

    def _rect_shapes(self, batch_size: int, stride: int, pad: float) -> list[tuple[int, int]]:
        """Stock rectangular batches: images sorted by aspect ratio, each batch letterboxed to one shape."""
        aspect = np.array([lab.shape[0] / lab.shape[1] for lab in self.labels])
        order = aspect.argsort()
        self.labels = [self.labels[i] for i in order]
        aspect = aspect[order]
        shapes = []
        for start in range(0, len(aspect), batch_size):
            chunk = aspect[start:start + batch_size]
            hw = [chunk.max(), 1] if chunk.max() < 1 else [1, 1 / chunk.min()] if chunk.min() > 1 else [1, 1]
            shape = tuple(int(v) for v in np.ceil(np.array(hw) * self.imgsz / stride + pad).astype(int) * stride)
            shapes += [shape] * len(chunk)
        return shapes


def cache_mode(cache: bool | str | None) -> str:
    """``--cache``'s mode: "" (none), "ram" (``--cache``, ``--cache ram``, or True from older runs) or "disk"."""
    if cache in (None, False, "", "none"):
        return ""
    if cache is True or cache == "ram":
        return "ram"
    if cache == "disk":
        return "disk"
    raise ValueError(f"--cache {cache}: choose ram or disk")


def loader_workers(requested: int, batch_size: int) -> int:
    """Worker processes worth starting: no more than the cores, nor than a batch; none for batch size 1."""
    return min(os.cpu_count() or 1, requested, batch_size if batch_size > 1 else 0)


def worker_init(worker_id: int) -> None:
    """DataLoader workers: OpenCV single-threaded (its thread pool fights the worker processes for cores), and
    numpy seeded from the worker's torch seed (DataLoader seeds torch and ``random`` only; transforms use all)."""
    cv2.setNumThreads(0)
    np.random.seed(torch.initial_seed() % 2**32)


def collate(samples: list[dict[str, Any]], place: Placer | None = None) -> dict[str, Any]:
    """Stack images (or cached feature maps, by key), concatenate per-instance fields, and add ``batch_idx``
    (the image of each instance). ``place(key, shape, dtype)`` may give the output tensor of a field (a view of a
    buffer the batch is to be written into, see :mod:`.shared_batches`), or None for a tensor of its own."""
    batch: dict[str, Any] = {}
    if "img" in samples[0]:
        batch["img"] = _joined([s["img"] for s in samples], stack=True, key="img", place=place)
    if "features" in samples[0]:
        batch["features"] = {k: _joined([s["features"][k] for s in samples], stack=True)
                             for k in samples[0]["features"]}
    for key in (*PER_INSTANCE, *samples[0].get("instance_fields", ())):
        if key in samples[0]:
            batch[key] = _joined([s[key] for s in samples], stack=False, key=key, place=place)
    batch["batch_idx"] = torch.cat([torch.full((len(s["cls"]),), i, dtype=torch.long) for i, s in enumerate(samples)])
    for key in ("im_file", "ori_shape", "ratio_pad", "input_hw"):
        if key in samples[0]:
            batch[key] = [s[key] for s in samples]
    return batch


def _joined(tensors: list[torch.Tensor], stack: bool, key: str = "", place: Placer | None = None) -> torch.Tensor:
    """``torch.stack`` / ``torch.cat``; into ``place``'s tensor when it gives one; else in a DataLoader worker
    straight into new shared memory, as torch's own collate does: the batch then crosses to the main process
    without being copied there first."""
    first = tensors[0]
    shape = (len(tensors), *first.shape) if stack else (sum(len(t) for t in tensors), *first.shape[1:])
    out = place(key, shape, first.dtype) if place is not None else None
    if out is None:
        if torch.utils.data.get_worker_info() is None:
            return torch.stack(tensors) if stack else torch.cat(tensors)
        out = first.new(first._typed_storage()._new_shared(math.prod(shape))).view(shape)  # as torch's collate
    return torch.stack(tensors, out=out) if stack else torch.cat(tensors, out=out)


def resample_polygon(polygon: np.ndarray, n: int) -> np.ndarray:
    """``n`` points tracing the closed polygon: all its vertices, extra points spread along edges by length.

    Keeping the vertices keeps the labelled shape exactly (sampling by arc length or vertex index cuts
    corners); a polygon with more than ``n`` vertices keeps ``n`` of them, evenly spaced by index.
    """
    m = len(polygon)
    if m >= n:
        return polygon[np.linspace(0, m, n, endpoint=False).astype(int)].astype(np.float32)
    closed = np.concatenate([polygon, polygon[:1]]).astype(np.float64)
    lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    share = lengths / lengths.sum() * (n - m) if lengths.sum() > 0 else np.full(m, (n - m) / m)
    extra = np.floor(share).astype(int)
    extra[np.argsort(extra - share)[: n - m - extra.sum()]] += 1  # largest remainders get the rest
    per_edge = extra + 1  # the edge's start vertex plus its extra points
    edge = np.repeat(np.arange(m), per_edge)
    t = (np.arange(n) - np.repeat(np.cumsum(per_edge) - per_edge, per_edge)) / np.repeat(per_edge, per_edge)
    return (closed[edge] + (closed[edge + 1] - closed[edge]) * t[:, None]).astype(np.float32)


def _box_outline(box: np.ndarray) -> np.ndarray:
    cx, cy, w, h = box
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)


def _ratio_pad(labels: dict[str, Any]) -> Any:
    """(gain, pad) from original to network image, as letterboxing reports it; None after mosaic/affine."""
    ratio_pad = labels.get("ratio_pad")
    if isinstance(ratio_pad, tuple) and len(ratio_pad) == 2 and isinstance(ratio_pad[0], tuple):
        return ratio_pad
    return None


def _without_instances(lab: ImageLabels) -> ImageLabels:
    from .labels import empty_labels

    return empty_labels(lab.im_file, lab.shape, [lab.keypoints.shape[1], 3] if lab.keypoints is not None else None)
