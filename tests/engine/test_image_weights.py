"""--image-weights, as stock: image weights equal stock's labels_to_image_weights on the same labels and mAPs; the
sampler draws by them; training runs with it; --rect with it is refused."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

from yolostitch.data.labels import ImageLabels
from yolostitch.engine.image_weights import ImageWeightSampler, per_class_maps
from yolostitch.engine.trainer import train
from yolostitch.errors import FlagError

NC = 4


def _labels():
    rng = np.random.default_rng(0)
    classes = [[0, 0, 1], [0], [2, 2, 2, 0], [], [1, 3], [0, 0], [3], [0, 1, 2]]  # class 0 common, 3 rare
    return [ImageLabels(f"{i}.jpg", (32, 32), np.array(c, np.int64), rng.uniform(0.2, 0.8, (len(c), 4)).astype(np.float32))
            for i, c in enumerate(classes)]


def test_weights_equal_stocks(stock_yolo):
    general = sys.modules["yolov5.utils.general"]
    labels = _labels()
    stock_labels = [np.concatenate([lab.cls[:, None].astype(np.float32), lab.bboxes], 1) for lab in labels]
    sampler = ImageWeightSampler(labels, NC)
    stock_class_weights = general.labels_to_class_weights(stock_labels, NC).numpy() * NC  # model.class_weights
    np.testing.assert_allclose(sampler.class_weights, stock_class_weights, rtol=1e-6)
    for maps in (np.zeros(NC), np.array([0.9, 0.5, 0.1, 0.0])):
        sampler.update(maps)
        expected = general.labels_to_image_weights(stock_labels, NC, stock_class_weights * (1 - maps) ** 2 / NC)
        np.testing.assert_allclose(sampler.weights(), expected, rtol=1e-6)


def test_sampler_draws_by_weight_and_is_reproducible():
    sampler = ImageWeightSampler(_labels(), NC, seed=3)
    sampler.set_epoch(0)
    draws = Counter()
    for epoch in range(400):
        sampler.set_epoch(epoch)
        draws.update(list(sampler))
    sampler.set_epoch(7)
    assert list(sampler) == list(sampler)  # an epoch's draw depends on seed and epoch only (resume)
    weights = sampler.weights()
    assert draws[3] == 0 and weights[3] == 0  # no labels: never drawn, as stock
    shares = np.array([draws[i] for i in range(8)]) / sum(draws.values())
    np.testing.assert_allclose(shares, weights / weights.sum(), atol=0.01)


def test_per_class_maps_from_results():
    results = {"box": {"per_class": {"cat": {"map": 0.4}, "dog": {"map": 0.1}}}}
    assert per_class_maps(results, {0: "cat", 1: "bird", 2: "dog"}).tolist() == [0.4, 0.0, 0.1]


def test_training_with_image_weights(options):
    summary = train(options(image_weights=True, epochs=2, noplots=True))
    assert summary["epochs"] == 2
    with pytest.raises(FlagError, match="--image-weights .*--rect"):
        train(options(image_weights=True, rect=True))
