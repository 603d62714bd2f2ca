"""--rect training, as stock: images sorted by aspect ratio, each batch letterboxed to its own shape, no mosaic, no
shuffling. The reference for where images and boxes land is validation's letterbox of the same batches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from yolostitch.data.config import load_data_config
from yolostitch.data.dataset import MultiTaskDataset, collate
from yolostitch.data.scan import scan_data_split
from yolostitch.engine.trainer import load_hyp, rect_hyp, train
from yolostitch.errors import FlagError

WIDE = [(40, 128), (48, 128), (56, 128), (64, 128)]  # (h, w)
SIZES = WIDE + [(w, h) for h, w in WIDE]  # and as many tall ones


@pytest.fixture()
def oblong(tmp_path) -> Path:
    """8 images, wide and tall (long side 128), one box each; its data YAML."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for i, (h, w) in enumerate(SIZES):
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            cv2.rectangle(image, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), (0, 0, 255), -1)
            cv2.imwrite(str(tmp_path / "images" / split / f"{i}.png"), image)
            (tmp_path / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [box]\n")
    return data


def test_rect_batches_land_where_the_letterbox_puts_them(oblong):
    """With the random affine at rest, a --rect training sample is validation's letterbox of it: same shape per
    batch, same pixels, same boxes."""
    config = load_data_config(oblong)
    labels = scan_data_split(config, config.splits["train"]).labels
    still = {**load_hyp("hyp.scratch-low.yaml"), "degrees": 0.0, "translate": 0.0, "scale": 0.0, "shear": 0.0,
             "perspective": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "fliplr": 0.0}
    trained = MultiTaskDataset(labels, 128, augment=True, hyp=rect_hyp(still), rect=True, batch_size=4, pad=0.0)
    letterboxed = MultiTaskDataset(labels, 128, augment=False, rect=True, batch_size=4, pad=0.0)
    shapes = set()
    for batch, reference in zip(DataLoader(trained, 4, collate_fn=collate), DataLoader(letterboxed, 4, collate_fn=collate)):
        assert batch["img"].shape == reference["img"].shape
        shapes.add(tuple(batch["img"].shape[2:]))
        assert (batch["img"].float() - reference["img"].float()).abs().mean() < 1.0
        torch.testing.assert_close(batch["bboxes"], reference["bboxes"], atol=1 / 128, rtol=0)
    assert shapes == {(64, 128), (128, 64)}  # the wide half, then the tall half: not one square shape


def test_rect_training_runs_and_refuses_features(oblong, tmp_path, capsys):
    summary = train(TrainOptionsFor(oblong, tmp_path, rect=True))
    assert "--rect: batches of images of like aspect ratio" in capsys.readouterr().out
    assert (Path(summary["save_dir"]) / "weights" / "last.pt").is_file()
    with pytest.raises(FlagError, match="--rect"):
        train(TrainOptionsFor(oblong, tmp_path, rect=True, features=str(tmp_path / "cache")))


def TrainOptionsFor(data: Path, tmp_path: Path, **kw):
    from yolostitch.engine.trainer import TrainOptions

    return TrainOptions(cfg="yolov5n.yaml", data=str(data), epochs=1, batch_size=4, imgsz=128, workers=0,
                        project=str(tmp_path / "runs"), noplots=True, **kw)


def test_processes_share_each_rect_block():
    """Under DDP, --rect's unshuffled sampler gives each process, batch by batch, part of one block of
    --batch-size images (rect shapes are set per such block): every process's batch has one shape."""
    total, world = 8, 2
    for n in (40, 36):  # whole blocks; a last block of 4
        for rank in range(world):
            order = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
            batches = [order[i:i + total // world] for i in range(0, len(order), total // world)]
            assert all(len({i // total for i in batch}) == 1 for batch in batches)
