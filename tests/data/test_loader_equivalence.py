"""The loader's fast paths yield what the plain computations yield: OpenCV channel reordering against numpy's,
per-channel HSV lookups against ultralytics' RandomHSV, cached images (served without a copy) against images
read from disk, batches collated into shared memory in a worker against batches collated in the main process."""

import random

import cv2
import numpy as np
import pytest
import torch
from ultralytics.data.augment import RandomHSV

from yolostitch.data.augment import HSV
from yolostitch.data.config import load_data_config
from yolostitch.data.dataset import MultiTaskDataset, collate
from yolostitch.data.image_layout import rgb_chw
from yolostitch.data.scan import scan_split

FIELDS = ("img", "cls", "has_mask", "bboxes", "masks", "keypoints", "batch_idx")


def test_rgb_chw_equals_numpy_layout_for_any_view():
    rng = np.random.default_rng(0)
    for shape in [(48, 64, 3), (1, 1, 3), (0, 5, 3), (7, 5, 4)]:
        img = rng.integers(0, 255, shape, np.uint8)
        for view in (img, img[::-1], img[:, ::-1], img[::-1, ::-1], img[1:, 2:], img[::2], img.transpose(1, 0, 2),
                     img[:, ::2], img[:-1, 1:-2][:, ::-1], img[2:, :-1][::-1]):
            expected = np.ascontiguousarray(view[..., ::-1].transpose(2, 0, 1))
            out = rgb_chw(view)
            assert out.shape == expected.shape and out.flags.c_contiguous
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("gains", [(0.015, 0.7, 0.4), (0.5, 0.5, 0.5), (0.0, 0.9, 0.0)])
def test_hsv_equals_ultralytics_random_hsv(gains):
    img = np.random.default_rng(1).integers(0, 255, (40, 56, 3), np.uint8)
    img[:4] = 255  # pure white stays white in both
    out = []
    for transform in (HSV(*gains), RandomHSV(*gains)):
        np.random.seed(3)
        out.append(transform({"img": img.copy()})["img"])
    np.testing.assert_array_equal(out[0], out[1])


def _dataset(tiny_shapes, cache):
    cfg = load_data_config(tiny_shapes)
    labels = scan_split(cfg.splits["train"], cfg.nc, cfg.kpt_shape).labels
    return MultiTaskDataset(labels, imgsz=64, augment=True, kpt_shape=cfg.kpt_shape, flip_idx=cfg.flip_idx,
                            hyp={"copy_paste": 0.5, "mixup": 0.5, "degrees": 10.0}, cache_images=cache)


def _batches(dataset, seed):
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    return [collate([dataset[i] for i in range(start, start + 4)]) for start in (0, 4, 0, 4)]


def test_cached_images_are_served_unchanged_and_yield_the_same_batches(tiny_shapes):
    cached, read = _dataset(tiny_shapes, True), _dataset(tiny_shapes, False)
    assert len(cached._images) == len(cached) and cached.use_masks and cached.use_keypoints
    for a, b in zip(_batches(cached, 0), _batches(read, 0)):
        assert len(a["cls"]) > 0
        for key in FIELDS:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    for index, img in cached._images.items():  # a whole augmented pass left every cached image as on disk
        assert not img.flags.writeable
        np.testing.assert_array_equal(img, read._read_image(index)[0])


def test_worker_batches_equal_main_process_batches(tiny_shapes):
    cfg = load_data_config(tiny_shapes)
    labels = scan_split(cfg.splits["train"], cfg.nc, cfg.kpt_shape).labels
    dataset = MultiTaskDataset(labels, imgsz=64, kpt_shape=cfg.kpt_shape, flip_idx=cfg.flip_idx)  # letterbox only
    main = [collate([dataset[i] for i in range(start, min(start + 3, len(dataset)))])
            for start in range(0, len(dataset), 3)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=collate)
    worker = list(loader)
    assert len(worker) == len(main)
    for a, b in zip(worker, main):
        assert a["img"].is_shared()  # collated straight into shared memory
        for key in FIELDS:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
