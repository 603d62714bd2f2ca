"""extract.py's cache writer: values the storage dtype cannot hold are refused at extraction; files are durable."""

import os
from pathlib import Path

import cv2
import pytest
import torch
from torch import nn

from yolostitch.data.feature_cache import FeatureCache, FeatureCacheError
from yolostitch.data.shapes import generate_shapes
from yolostitch.extract.writer import write_cache

FP16_MAX = torch.finfo(torch.float16).max  # 65504


class ScaledPool(nn.Module):
    """Average-pooled pixels (in [0, 1]) times ``scale`` on map p16: its peak is ``scale`` times the brightest
    pooled pixel, so a scale above 65504 overflows float16 on any image that is not all black."""

    spec, weights_hash, normalise = "test:scaled", "0123456789abcdef", "none"

    def __init__(self, scale: float = 1.0, poison: float | None = None):
        super().__init__()
        self.scale, self.poison = scale, poison

    def contract(self):
        return {"p8": {"channels": 3, "stride": 8}, "p16": {"channels": 3, "stride": 16}}

    def forward(self, x):
        p16 = nn.functional.avg_pool2d(x, 16) * self.scale
        if self.poison is not None:
            p16[-1, 0, 0, 0] = self.poison  # the batch's last image
        return {"p8": nn.functional.avg_pool2d(x, 8), "p16": p16}


@pytest.fixture()
def data(tmp_path):
    root = generate_shapes(tmp_path / "shapes", n_train=3, n_val=1, imgsz=64)
    path = root / "data.yaml"
    path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [a, b, c, d, e]\n"
                    "kpt_shape: [5, 3]\nflip_idx: [0, 3, 2, 1, 4]\n")
    return path


def write(extractor, data, out, **kw):
    return write_cache(extractor, str(data), out, imgsz=64, batch_size=4, workers=0, **kw)


def test_fp16_overflow_is_refused_at_extraction_with_the_map_and_peak(data, tmp_path):
    scale = 4 * FP16_MAX
    with pytest.raises(FeatureCacheError) as e:
        write(ScaledPool(scale), data, tmp_path / "cache")
    message = str(e.value)
    assert "'p16'" in message and "--dtype float32" in message and "float16" in message
    # the peak it names is the map's own maximum, recomputed here independently for the named image
    named = next(p for p in Path(data).parent.rglob("*.jpg") if str(p) in message)
    img = cv2.imread(str(named))
    h, w = img.shape[:2]
    assert h == w == 64  # generated at imgsz: the letterbox is the identity
    pixels = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255  # channel order: same max
    peak = float((nn.functional.avg_pool2d(pixels, 16) * scale).abs().max())
    assert f"|{peak:.4g}|" in message


def test_large_values_are_fine_in_float32_and_bfloat16(data, tmp_path):
    scale = 4 * FP16_MAX
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        write(ScaledPool(scale), data, out, dtype=dtype)
        cache = FeatureCache(out)
        maps = [cache.load(e)["p16"] for e in cache.entries.values()]
        assert all(torch.isfinite(m.float()).all() for m in maps)
        assert max(float(m.float().max()) for m in maps) > FP16_MAX


def test_values_just_inside_float16_are_kept(data, tmp_path):
    write(ScaledPool(FP16_MAX), data, tmp_path / "cache")  # pooled pixels <= 1: peak <= 65504, rounds to finite
    cache = FeatureCache(tmp_path / "cache")
    assert all(torch.isfinite(cache.load(e)["p16"].float()).all() for e in cache.entries.values())


def test_inf_from_the_extractor_itself_is_named(data, tmp_path):
    with pytest.raises(FeatureCacheError, match=r"'p16'.*inf or nan as the extractor returned it"):
        write(ScaledPool(poison=float("nan")), data, tmp_path / "cache", dtype="float32")


def test_every_cache_file_is_fsynced_before_it_is_renamed_into_place(data, tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name a file descriptor")
    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "cache"
    write(ScaledPool(), data, out)
    files = sorted(out.rglob("*.safetensors")) + [out / "index.json"]
    assert len(files) == 5
    for f in files:  # written under a temporary name beside the file, synced, then renamed
        assert any(Path(s).parent == f.parent and Path(s).name.startswith(f".{f.name}.") for s in synced), f
