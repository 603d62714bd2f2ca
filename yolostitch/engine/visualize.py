"""``detect.py --visualize``, as stock: each layer's output feature maps for each image, as pictures.

Per image, ``<run>/<stem>/stage{i}_{Module}_features.png`` for every layer before the heads: its first 32
channels in a grid of 8 columns, each channel scaled to its own range and coloured (viridis). For a stitched
model this shows what an adapter hands the neck. Only the first forward of an image is kept (with ``--augment``,
the full-size pass).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import FlagError

CHANNELS = 32  # stock's: the first 32 channels
COLUMNS = 8
MIN_TILE = 64  # small maps are enlarged (nearest) to at least this many pixels a side


class FeatureRecorder:
    """Forward hooks on a model's layers (not its heads) keeping each layer's output of the current image."""

    def __init__(self, model: nn.Module):
        layers = getattr(model, "model", None)
        if not isinstance(layers, (nn.ModuleList, nn.Sequential)):
            raise FlagError("--visualize draws the PyTorch model's layers; an exported graph has none to draw: "
                            "give the .pt checkpoint")
        self.maps: dict[int, tuple[str, torch.Tensor]] = {}
        self.handles = [layer.register_forward_hook(self._hook(i))
                        for i, layer in enumerate(layers) if getattr(layer, "task", None) is None]

    def _hook(self, index: int):
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            if torch.is_tensor(output) and output.dim() == 4 and index not in self.maps:
                self.maps[index] = (type(module).__name__, output[0].detach().float().cpu())
        return keep

    def save(self, folder: Path) -> int:
        """Write the kept maps as pictures into ``folder``, forget them; return how many were written."""
        folder.mkdir(parents=True, exist_ok=True)
        for index, (name, fmap) in sorted(self.maps.items()):
            cv2.imwrite(str(folder / f"stage{index}_{name}_features.png"), feature_grid(fmap))
        n = len(self.maps)
        self.maps.clear()
        return n

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def feature_grid(fmap: torch.Tensor, channels: int = CHANNELS, columns: int = COLUMNS) -> np.ndarray:
    """(C, H, W) -> a BGR grid of its first ``channels`` channels, each min-max scaled, viridis-coloured."""
    fmap = fmap[:channels]
    c, h, w = fmap.shape
    scale = max(1, math.ceil(MIN_TILE / max(min(h, w), 1)))
    lo = fmap.amin(dim=(1, 2), keepdim=True)
    hi = fmap.amax(dim=(1, 2), keepdim=True)
    grey = ((fmap - lo) / (hi - lo).clamp(min=1e-12) * 255).round().to(torch.uint8).numpy()
    cols = min(columns, c)
    rows = math.ceil(c / cols)
    gap = 2
    tile_h, tile_w = h * scale, w * scale
    canvas = np.full((rows * (tile_h + gap) - gap, cols * (tile_w + gap) - gap, 3), 255, np.uint8)
    for k in range(c):
        tile = cv2.applyColorMap(np.kron(grey[k], np.ones((scale, scale), np.uint8)), cv2.COLORMAP_VIRIDIS)
        y, x = (k // cols) * (tile_h + gap), (k % cols) * (tile_w + gap)
        canvas[y:y + tile_h, x:x + tile_w] = tile
    return canvas
