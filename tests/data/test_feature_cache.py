"""The feature cache: what extract writes, resuming, staleness, and the dataset that trains on it."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from yolostitch.data.dataset import MultiTaskDataset, collate
from yolostitch.data.feature_cache import FeatureCache, FeatureCacheError, FeatureDataset
from yolostitch.data.scan import scan_split
from yolostitch.data.shapes import generate_shapes
from yolostitch.extract.writer import write_cache
from yolostitch.models import Shape


class PoolExtractor(nn.Module):
    """Average-pooled pixels at strides 8/16/32: cheap, and its maps of a flipped image are its maps flipped."""

    spec, weights_hash, normalise = "test:pool", "feedfeedfeedfeed", "none"
    calls = 0

    def contract(self):
        return {f"p{s}": {"channels": 3, "stride": s} for s in (8, 16, 32)}

    def forward(self, x):
        PoolExtractor.calls += len(x)
        return {f"p{s}": nn.functional.avg_pool2d(x, s) for s in (8, 16, 32)}


@pytest.fixture()
def dataset(tmp_path):
    root = generate_shapes(tmp_path / "shapes", n_train=6, n_val=2, imgsz=64)
    # one non-square image: normalised labels stay right under a resize, the letterbox now pads
    first = sorted((root / "images" / "train").glob("*.jpg"))[0]
    cv2.imwrite(str(first), cv2.resize(cv2.imread(str(first)), (64, 40)))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [a, b, c, d, e]\n"
                    "kpt_shape: [5, 3]\nflip_idx: [0, 3, 2, 1, 4]\n")
    return data


def write(data, out, **kw):
    return write_cache(PoolExtractor(), str(data), out, imgsz=64, batch_size=4, workers=0, **kw)


def test_cache_files_index_and_metadata(dataset, tmp_path):
    summary = write(dataset, tmp_path / "cache")
    assert summary["images"] == summary["written"] == 8
    cache = FeatureCache(tmp_path / "cache")
    assert cache.contract == {f"p{s}": Shape(3, s) for s in (8, 16, 32)} and cache.imgsz == 64 and not cache.has_flips
    entry = next(e for e in cache.entries.values() if e.shape == (40, 64))
    assert entry.ratio_pad == ((1.0, 1.0), (0.0, 12.0))  # 64x40 padded to 64x64: 12 rows above
    maps = cache.load(entry)
    assert {k: tuple(v.shape) for k, v in maps.items()} == {"p8": (3, 8, 8), "p16": (3, 4, 4), "p32": (3, 2, 2)}
    assert maps["p8"].dtype == torch.float16
    # on disk the contract keeps the plain form earlier versions wrote (their caches open unchanged)
    header = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert header["features"] == {f"p{s}": {"channels": 3, "stride": s} for s in (8, 16, 32)}
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 8


def test_an_index_written_before_shapes_opens(tmp_path):
    """A cache index as the first cache format wrote it (a literal, not made by today's writer)."""
    (tmp_path / "index.json").write_text(
        '{"format": "yolostitch-features/1", "extractor": "torchvision:resnet18", "weights_hash": "0123456789abcdef", '
        '"normalise": "imagenet", "imgsz": 320, "dtype": "float16", "flip": false, '
        '"features": {"layer2": {"channels": 128, "stride": 8}, "layer3": {"channels": 256, "stride": 16}}, '
        '"data": "data.yaml", "entries": []}')
    cache = FeatureCache(tmp_path)
    assert cache.contract == {"layer2": Shape(128, 8), "layer3": Shape(256, 16)}
    assert cache.describe().endswith("imgsz 320, float16, maps layer2 128ch/s8, layer3 256ch/s16")
    index = json.loads((tmp_path / "index.json").read_text())
    index["features"]["layer3"]["stride"] = 0
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(FeatureCacheError, match=r"index.json: features: map 'layer3': stride must be a positive"):
        FeatureCache(tmp_path).contract


def test_rerun_extracts_only_what_is_missing_or_changed(dataset, tmp_path):
    out = tmp_path / "cache"
    write(dataset, out)
    assert write(dataset, out)["written"] == 0
    # a killed run: the index is gone, the files remain; each file's own metadata says it is current
    (out / "index.json").unlink()
    assert write(dataset, out)["written"] == 0
    # a torn file and a changed image are redone, nothing else
    files = sorted(out.rglob("*.safetensors"))
    files[0].write_bytes(b"torn")
    image = sorted((dataset.parent / "images" / "val").glob("*.jpg"))[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert write(dataset, out)["written"] == 2
    # another extractor setting (dtype) makes every file stale
    assert write(dataset, out, dtype="float32")["written"] == 8


def test_dataset_labels_equal_the_image_pipeline(dataset, tmp_path):
    write(dataset, tmp_path / "cache")
    cache = FeatureCache(tmp_path / "cache")
    labels = scan_split([dataset.parent / "images" / "train"], 5, [5, 3]).labels
    feats = FeatureDataset(labels, cache, kpt_shape=[5, 3], use_masks=True)
    images = MultiTaskDataset(labels, imgsz=64, kpt_shape=[5, 3], use_masks=True)
    for i in range(len(labels)):
        a, b = feats[i], images[i]
        assert "img" not in a and a["input_hw"] == tuple(b["img"].shape[1:])
        for key in ("cls", "bboxes", "masks", "keypoints"):
            assert torch.equal(a[key], b[key]), key
        assert np.allclose(a["ratio_pad"], b["ratio_pad"])
        # the maps are those of the image the labels describe
        assert torch.allclose(a["features"]["p8"].float(), nn.functional.avg_pool2d(b["img"].float()[None] / 255, 8)[0],
                              atol=2e-3)
    batch = collate([feats[0], feats[1]])
    assert batch["features"]["p16"].shape == (2, 3, 4, 4) and "img" not in batch


def test_flips_only_with_flipped_maps(dataset, tmp_path):
    labels = scan_split([dataset.parent / "images" / "train"], 5, [5, 3]).labels
    write(dataset, tmp_path / "plain")
    assert FeatureDataset(labels, FeatureCache(tmp_path / "plain"), augment=True, hyp={"fliplr": 1.0}).fliplr == 0
    write(dataset, tmp_path / "flip", flip=True)
    cache = FeatureCache(tmp_path / "flip")
    flipped = FeatureDataset(labels, cache, augment=True, hyp={"fliplr": 1.0}, kpt_shape=[5, 3],
                             flip_idx=[0, 3, 2, 1, 4])
    plain = FeatureDataset(labels, cache, kpt_shape=[5, 3], flip_idx=[0, 3, 2, 1, 4])
    a, b = flipped[1], plain[1]
    assert torch.allclose(a["features"]["p8"], b["features"]["p8"].flip(-1), atol=1e-3)
    assert torch.allclose(a["bboxes"][:, 0], 1 - b["bboxes"][:, 0], atol=1e-5)
    visible = b["keypoints"][:, 1, 2] > 0  # keypoint 1 (right) becomes keypoint 3 (left)
    assert torch.allclose(a["keypoints"][visible, 3, 0], 1 - b["keypoints"][visible, 1, 0], atol=1e-5)


def test_stale_and_missing_images_are_skipped_with_a_report(dataset, tmp_path, caplog):
    write(dataset, tmp_path / "cache", splits=["train"])
    cache = FeatureCache(tmp_path / "cache")
    labels = scan_split([dataset.parent / "images" / "train", dataset.parent / "images" / "val"], 5, [5, 3]).labels
    changed = Path(labels[0].im_file)
    changed.write_bytes(changed.read_bytes() + b"\0")
    feats = FeatureDataset(labels, cache)
    assert len(feats) == 5
    assert sum("not in the feature cache" in line for line in feats.skipped) == 2
    assert any("changed since its features were extracted" in line for line in feats.skipped)


def test_unusable_caches_are_named(dataset, tmp_path):
    with pytest.raises(FeatureCacheError, match=r"not a feature cache \(no index.json\); make one with extract.py"):
        FeatureCache(tmp_path)
    write(dataset, tmp_path / "cache")
    index = tmp_path / "cache" / "index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "format": "other"}))
    with pytest.raises(FeatureCacheError, match="format 'other'"):
        FeatureCache(tmp_path / "cache")
    write(dataset, tmp_path / "cache2")
    cache = FeatureCache(tmp_path / "cache2")
    entry = next(iter(cache.entries.values()))
    (tmp_path / "cache2" / entry.file).write_bytes(b"torn")
    with pytest.raises(FeatureCacheError, match=r"features of .*re-run extract.py"):
        cache.load(entry)
    with pytest.raises(ValueError, match=r"--splits \['test'\]"):
        write(dataset, tmp_path / "cache3", splits=["test"])
