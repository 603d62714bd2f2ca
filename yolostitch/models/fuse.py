"""Fold each convolution's BatchNorm into the convolution for inference, as stock ``detect.py`` does: one op
fewer per block, the same outputs up to float rounding. Training needs the BatchNorm back: fuse a copy."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> int:
    """Fuse in place every block holding ``conv`` + ``bn`` and a ``forward_fuse`` (ultralytics' ``Conv`` family,
    which every stock YOLOv5 block is built of); return how many. The model must be in eval mode."""
    if model.training:
        raise RuntimeError("fuse_conv_bn: put the model in eval mode first (fusing bakes in the running statistics)")
    fused = 0
    for block in model.modules():
        conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and hasattr(block, "forward_fuse"):
            block.conv = fuse_conv_bn_eval(conv, bn)
            del block.bn
            block.forward = block.forward_fuse
            fused += 1
    return fused
