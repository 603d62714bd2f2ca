"""Model summary as stock YOLOv5 prints it: a layer table, then layers, parameters and GFLOPs."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def gflops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float | None:
    """GFLOPs of one forward pass at ``imgsz`` counted by thop, the way stock YOLOv5 does it.

    Profiles a stride-sized input and scales to ``imgsz`` (FLOPs of convolutions grow with pixels).
    Returns None when thop is unavailable or the model cannot be profiled on an image input.
    """
    try:
        import thop
    except ImportError:
        return None
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    if hasattr(model, "example_input"):  # a feature-input model counts its adapters, neck and heads
        example = model.example_input(stride)
    else:
        p = next(model.parameters())
        example = torch.zeros((1, int(getattr(model, "yaml", {}).get("ch", 3)), stride, stride), device=p.device,
                              dtype=p.dtype)
    try:
        macs = thop.profile(copy.deepcopy(model), inputs=(example,), verbose=False)[0]
    except Exception:  # odd custom modules: no figure rather than a crash
        return None
    return macs * 2 / 1e9 * (h / stride) * (w / stride)


def model_summary(model: nn.Module, imgsz: int = 640, verbose: bool = True) -> dict[str, Any]:
    n_params = sum(p.numel() for p in model.parameters())
    n_grads = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_layers = len(list(model.modules()))
    flops = gflops(model, imgsz)
    source = getattr(model, "checkpoint", {}).get("path") or getattr(model, "yaml", {}).get("yaml_file", "model")
    name = Path(str(source)).stem
    line = f"{name} summary: {n_layers} layers, {n_params:,} parameters, {n_grads:,} gradients"
    if flops is not None:
        line += f", {flops:.1f} GFLOPs at {imgsz}"
    if verbose:
        header = f"{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<24}{'arguments':<30}{'out (c, stride)':>16}"
        logger.info(header)
        for layer in getattr(model, "layers", []):
            params = sum(p.numel() for p in layer.module.parameters())
            src = layer.sources[0] if layer.single else layer.sources
            out = f"{layer.shape.channels}, {layer.shape.stride}" if layer.shape else "-"
            logger.info(f"{layer.index:>3}{str(src):>18}{layer.number:>3}{params:10.0f}  {layer.module_name:<24}"
                        f"{str(layer.args):<30}{out:>16}")
        logger.info(line)
    return {"layers": n_layers, "parameters": n_params, "gradients": n_grads, "gflops": flops, "summary": line}
