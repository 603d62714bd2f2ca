"""The feature cache: one safetensors file per image plus ``index.json``, and the dataset that trains on it.

Layout of a cache directory (written by ``extract.py``)::

    index.json            header (extractor, weights hash, imgsz, dtype, flip, the feature contract) + entries
    <split>/<stem>-<hash>.safetensors   {key: (C, h, w)} (and {key@flip: ...} with --flip), metadata as strings

Every image is letterboxed as validation letterboxes it (long side to ``imgsz``, centred padding to a square
``imgsz`` x ``imgsz``), so one entry's ``ratio_pad`` maps its boxes back to the original image. The contract
(``{key: Shape}``, stored as ``{key: {"channels", "stride"}}``) is what a model's FeatureInput layers are fitted to
and checked against.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import safe_open
from ultralytics.data.augment import RandomFlip

from ..errors import DataError
from ..models.shape import Shape, describe_contract, read_contract
from .dataset import MultiTaskDataset
from .labels import ImageLabels

LOGGER = logging.getLogger("yolostitch")
FORMAT = "yolostitch-features/1"
INDEX = "index.json"
FLIP = "@flip"  # suffix of a key's horizontally flipped map
HEADER_KEYS = ("extractor", "weights_hash", "imgsz", "dtype", "flip", "normalise", "features")


class FeatureCacheError(DataError):
    """A feature cache that cannot be used as asked; the message names the directory or file."""


@dataclass(frozen=True)
class CacheEntry:
    """One cached image: where its maps are and how it was letterboxed."""

    im_file: str
    file: str  # relative to the cache root
    shape: tuple[int, int]  # original (h, w)
    ratio_pad: tuple[tuple[float, float], tuple[float, float]]
    image_size: int  # bytes of the image file at extraction (staleness check)
    image_mtime_ns: int

    def to_json(self) -> dict[str, Any]:
        return {"im_file": self.im_file, "file": self.file, "shape": list(self.shape),
                "ratio_pad": [list(self.ratio_pad[0]), list(self.ratio_pad[1])], "image_size": self.image_size,
                "image_mtime_ns": self.image_mtime_ns}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CacheEntry:
        (g0, g1), (p0, p1) = d["ratio_pad"]
        return cls(d["im_file"], d["file"], tuple(d["shape"]), ((g0, g1), (p0, p1)), int(d["image_size"]),
                   int(d["image_mtime_ns"]))

    def is_stale(self) -> bool:
        """The image changed (or vanished) since its features were extracted."""
        try:
            st = os.stat(self.im_file)
        except OSError:
            return True
        return st.st_size != self.image_size or st.st_mtime_ns != self.image_mtime_ns


def bytes_per_image(contract: dict[str, Shape], imgsz: int, dtype: str, flip: bool) -> int:
    """Size of one image's maps at ``imgsz`` (square letterbox): the estimate extract.py prints."""
    itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    values = sum(shape.channels * (-(-imgsz // shape.stride)) ** 2 for shape in contract.values())
    return values * itemsize * (2 if flip else 1)


class FeatureCache:
    """A cache directory opened for reading: its header, its entries by image path, and map loading."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index = self.root / INDEX
        if not index.is_file():
            raise FeatureCacheError(f"{self.root}: not a feature cache (no {INDEX}); make one with extract.py "
                                    "--extractor X --data Y.yaml --out DIR")
        try:
            data = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FeatureCacheError(f"{index}: unreadable index ({e}); re-run extract.py to rebuild it") from None
        if data.get("format") != FORMAT:
            raise FeatureCacheError(f"{index}: format {data.get('format')!r}, expected {FORMAT!r}")
        missing = [k for k in HEADER_KEYS if k not in data]
        if missing:
            raise FeatureCacheError(f"{index}: header lacks {missing}")
        self.header = {k: data[k] for k in data if k != "entries"}
        self.entries = {e["im_file"]: CacheEntry.from_json(e) for e in data.get("entries", [])}

    @property
    def contract(self) -> dict[str, Shape]:
        """``{key: Shape}`` of the maps, read from the header's records (as every version wrote them)."""
        return read_contract(self.header["features"], f"{self.root / INDEX}: features", FeatureCacheError)

    @property
    def imgsz(self) -> int:
        return int(self.header["imgsz"])

    @property
    def has_flips(self) -> bool:
        return bool(self.header["flip"])

    def describe(self) -> str:
        maps = describe_contract(self.contract)
        return (f"{self.root}: {len(self.entries)} images, extractor {self.header['extractor']} "
                f"(weights {self.header['weights_hash']}), imgsz {self.imgsz}, {self.header['dtype']}, maps {maps}")

    def load(self, entry: CacheEntry, flipped: bool = False) -> dict[str, torch.Tensor]:
        """The maps of one image (flipped ones under the plain keys when ``flipped``)."""
        path = self.root / entry.file
        suffix = FLIP if flipped else ""
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k + suffix) for k in self.header["features"]}
        except Exception as e:  # missing or torn file: say which, and what to do
            raise FeatureCacheError(f"{path} (features of {entry.im_file}): {type(e).__name__}: {e}; re-run "
                                    "extract.py on this dataset to rewrite it") from None

    def select(self, labels: Sequence[ImageLabels]) -> tuple[list[ImageLabels], list[CacheEntry], list[str]]:
        """The labels that have current cached features, their entries, and a report line per skipped image."""
        kept, entries, skipped = [], [], []
        for lab in labels:
            entry = self.entries.get(str(Path(lab.im_file).resolve())) or self.entries.get(lab.im_file)
            if entry is None:
                skipped.append(f"{lab.im_file}: not in the feature cache {self.root}")
            elif entry.is_stale():
                skipped.append(f"{lab.im_file}: changed since its features were extracted")
            else:
                kept.append(lab)
                entries.append(entry)
        return kept, entries, skipped


class FeatureDataset(MultiTaskDataset):
    """Labels letterboxed exactly as at extraction, with the cached maps in place of the image.

    The image is never decoded: a blank of the resized size goes through the same letterbox so boxes, masks
    and keypoints land where the extractor saw them. The only augmentation is a horizontal flip, and only
    when the cache holds flipped maps (``extract.py --flip``); mosaic, HSV, scale, translate and mixup need
    the pixels and are lost.
    """

    def __init__(self, labels: Sequence[ImageLabels], cache: FeatureCache, augment: bool = False,
                 hyp: dict[str, float] | None = None, kpt_shape: Sequence[int] | None = None,
                 flip_idx: Sequence[int] | None = None, mask_ratio: int = 4, use_masks: bool | None = None,
                 instance_fields: Sequence = ()):
        kept, self.entries, skipped = cache.select(labels)
        for line in skipped:
            LOGGER.warning(f"skipped {line}")
        if not kept:
            raise FeatureCacheError(f"{cache.root}: none of the {len(labels)} images has current cached features; "
                                    "run extract.py on this dataset")
        self.skipped = skipped
        self.cache = cache
        super().__init__(kept, imgsz=cache.imgsz, augment=False, kpt_shape=kpt_shape, flip_idx=flip_idx,
                         mask_ratio=mask_ratio, use_masks=use_masks, instance_fields=instance_fields)
        self.fliplr = float((hyp or {}).get("fliplr", 0.5)) if augment and cache.has_flips else 0.0
        self.flipper = RandomFlip(direction="horizontal", p=1.0, flip_idx=self.flip_idx)
        self._checked: set[int] = set()

    def load_image(self, index: int):
        """A blank of the size the image is resized to (as ``MultiTaskDataset.load_image`` would return it)."""
        h0, w0 = self.labels[index].shape
        r = self.imgsz / max(h0, w0)
        size = (int(np.ceil(h0 * r)), int(np.ceil(w0 * r))) if r != 1 else (h0, w0)
        return np.zeros((*size, 3), np.uint8), (h0, w0), size

    def __getitem__(self, index: int) -> dict[str, Any]:
        flipped = self.fliplr > 0 and random.random() < self.fliplr
        labels = self.transforms(self.get_image_and_label(index))
        if flipped:
            labels = self.flipper(labels)
        h, w = labels["img"].shape[:2]
        sample = self.to_sample(labels)
        del sample["img"]
        self._check_letterbox(index, sample["ratio_pad"])
        sample["features"] = self.cache.load(self.entries[index], flipped)
        sample["input_hw"] = (h, w)
        return sample

    def _check_letterbox(self, index: int, ratio_pad) -> None:
        if index in self._checked:
            return
        entry = self.entries[index]
        if not np.allclose(np.array(ratio_pad, dtype=float), np.array(entry.ratio_pad, dtype=float), atol=1e-4):
            raise FeatureCacheError(f"{self.cache.root / entry.file}: letterboxed as {entry.ratio_pad} at extraction, "
                                    f"but the labels of {entry.im_file} letterbox as {ratio_pad} now; re-run extract.py")
        self._checked.add(index)
