"""Augmentation pipelines built from ultralytics' transforms (pinned version), which move boxes, polygons
and keypoints together, clip or drop what leaves the image, and mark keypoints that leave as invisible.

ultralytics' dataset refuses polygons and keypoints together; its transforms do not, provided every image
carries both. So a dataset with any masks gives each instance a polygon (its box outline when it has none:
under any affine or perspective map the box of the transformed outline equals the transformed box), and a
second ``cls`` column marks which polygons are real. Transforms index ``cls`` row-wise, so the mark follows
each instance through mosaic, copy-paste, mixup and filtering.
"""

from __future__ import annotations

from typing import Any

from ultralytics.data.augment import (Compose, CopyPaste, LetterBox, MixUp, Mosaic, RandomFlip, RandomHSV,
                                      RandomPerspective)

# stock YOLOv5 hyp.scratch-low.yaml augmentation values
DEFAULT_AUGMENT: dict[str, float] = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0,
    "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0,
}


def train_transforms(dataset: Any, imgsz: int, hyp: dict[str, float] | None = None) -> Compose:
    """Stock YOLOv5's training order: mosaic (+ copy-paste) -> affine -> mixup -> HSV -> flips."""
    h = {**DEFAULT_AUGMENT, **(hyp or {})}
    affine = RandomPerspective(degrees=h["degrees"], translate=h["translate"], scale=h["scale"], shear=h["shear"],
                               perspective=h["perspective"], size=(imgsz, imgsz))
    steps = [Mosaic(dataset, imgsz=imgsz, p=h["mosaic"])]
    if dataset.use_masks and h["copy_paste"] > 0:
        steps.append(CopyPaste(dataset, p=h["copy_paste"], mode="flip"))
    steps.append(affine)
    pre = Compose(steps)
    flip_idx = dataset.flip_idx or []
    fliplr, flipud = h["fliplr"], h["flipud"]
    if dataset.use_keypoints and not flip_idx:  # without flip_idx a flip would swap left and right keypoints
        fliplr = flipud = 0.0
    return Compose([
        pre,
        MixUp(dataset, pre_transform=pre, p=h["mixup"]),
        RandomHSV(hgain=h["hsv_h"], sgain=h["hsv_s"], vgain=h["hsv_v"]),
        RandomFlip(direction="vertical", p=flipud, flip_idx=flip_idx),
        RandomFlip(direction="horizontal", p=fliplr, flip_idx=flip_idx),
    ])


def val_transforms(imgsz: int) -> Compose:
    """Letterbox to ``imgsz`` (or the batch's rect shape), never scaling up, as stock validation does."""
    return Compose([LetterBox(new_shape=(imgsz, imgsz), auto=False, scaleup=False)])
