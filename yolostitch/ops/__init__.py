"""Geometry helpers that training, evaluation and inference share (box conversions, the letterbox, mask resizing
and cropping, OKS sigmas): no package has to import another's internals (inference never imports ``losses``)."""

from .boxes import box_crop, xywh2xyxy
from .keypoints import COCO_SIGMAS, keypoint_sigmas
from .letterbox import PAD_VALUE, LetterboxPlan, letterbox, pad_edges, plan_letterbox
from .masks import resize_masks

__all__ = ["COCO_SIGMAS", "PAD_VALUE", "LetterboxPlan", "box_crop", "keypoint_sigmas", "letterbox", "pad_edges",
           "plan_letterbox", "resize_masks", "xywh2xyxy"]
