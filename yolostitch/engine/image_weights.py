"""``--image-weights``, as stock: each epoch draws as many images as the split holds, with replacement, weighted
towards images holding rare classes and classes that validate badly.

Stock's weights: a class weighs the inverse of its share of the training labels, times (1 - its last
validation mAP50-95)², and an image the sum of its labels' class weights (so an image without labels is never
drawn, as in stock). Until the first validation every mAP counts as 0.
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def class_weights(labels: Sequence[Any], nc: int) -> np.ndarray:
    """Inverse class frequency over the labels, normalised to sum to 1 (a class without labels counts once)."""
    counts = np.bincount(np.concatenate([np.asarray(lab.cls, np.int64) for lab in labels] or [np.zeros(0, np.int64)]),
                         minlength=nc).astype(np.float64)
    counts[counts == 0] = 1
    weights = 1 / counts
    return weights / weights.sum()


class ImageWeightSampler(Sampler[int]):
    """Draws ``len(labels)`` indices per epoch by :meth:`weights`; :meth:`update` takes the last validation's
    per-class mAP50-95. Seeded per epoch (``set_epoch``), so a resumed run draws what it would have."""

    def __init__(self, labels: Sequence[Any], nc: int, seed: int = 0):
        self.nc, self.seed, self.epoch = nc, seed, 0
        self.per_image = np.stack([np.bincount(np.asarray(lab.cls, np.int64), minlength=nc)[:nc] for lab in labels]
                                  ) if len(labels) else np.zeros((0, nc))
        self.class_weights = class_weights(labels, nc) * nc  # stock's model.class_weights
        self.maps = np.zeros(nc)

    def update(self, maps: np.ndarray) -> None:
        self.maps = np.asarray(maps, np.float64)

    def weights(self) -> np.ndarray:
        """Per image: the sum over its labels of class weight x (1 - class mAP50-95)² / nc (stock's)."""
        per_class = self.class_weights * (1 - self.maps) ** 2 / self.nc
        return (self.per_image * per_class[None]).sum(1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        weights = self.weights()
        if not weights.sum() > 0:  # nothing labelled (or every class perfect): draw uniformly
            weights = np.ones(len(weights))
        rng = random.Random(self.seed * 100_003 + self.epoch)
        return iter(rng.choices(range(len(weights)), weights=weights.tolist(), k=len(weights)))

    def __len__(self) -> int:
        return len(self.per_image)


def per_class_maps(results: dict[str, Any], names: dict[int, str], key: str = "box") -> np.ndarray:
    """Each class's mAP50-95 from :func:`~yolostitch.engine.validator.evaluate`'s results; 0 for a class the
    validation split does not hold (as stock)."""
    per_class = (results.get(key) or {}).get("per_class", {})
    return np.array([per_class.get(names[c], {}).get("map", 0.0) for c in sorted(names)], np.float64)
