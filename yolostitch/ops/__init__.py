"""Geometry helpers that training, evaluation and inference share (box conversions, mask resizing and cropping,
OKS sigmas): no package has to import another's internals (inference never imports ``losses``)."""

from .boxes import box_crop, xywh2xyxy
from .keypoints import COCO_SIGMAS, keypoint_sigmas
from .masks import resize_masks

__all__ = ["COCO_SIGMAS", "box_crop", "keypoint_sigmas", "resize_masks", "xywh2xyxy"]
