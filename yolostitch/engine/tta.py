"""Test-time augmentation (``--augment`` in ``val.py`` and ``detect.py``), as stock YOLOv5's ``augment=True``.

The input runs three times: as it is, mirrored left-right at 0.83 of its size, and at 0.67 of its size (each
scaled bilinearly and padded to a stride multiple with grey 0.447, as stock's ``scale_img``). Each task maps its
pass back to the input's pixels (:meth:`~yolostitch.tasks.Task.unaugment`): per-anchor rows are concatenated over
the passes, so the one NMS sees them all; image-level outputs are averaged. As stock, the full-size pass drops
its coarsest level (the largest objects, which the smaller passes see whole) and the 0.67 pass its finest (the
smallest objects, shrunk below what that level resolves). Masks are refused: their prototypes are per pass.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FlagError
from ..export.runtime import is_exported
from ..heads.outputs import AnchorRows

SCALES = (1.0, 0.83, 0.67)  # stock's
FLIPS = (False, True, False)  # left-right mirror per pass, stock's
PAD_VALUE = 0.447  # stock's grey for the padding of scaled images (ImageNet's mean)


def check_augment(weights: Any) -> None:
    """Refuse --augment for exported weights, before they load: they run at one input size."""
    if not isinstance(weights, nn.Module) and is_exported(weights):
        raise FlagError(f"--augment runs the PyTorch model at three input sizes; {weights} is an exported graph: "
                        "give its .pt checkpoint")


def refuse_feature_model(model: nn.Module, weights: Any) -> None:
    """Refuse --augment for a FeatureInput model: it reads feature maps, not the images --augment rescales."""
    if getattr(model, "feature_inputs", None):
        raise FlagError(f"--augment rescales and mirrors images; {weights} is a FeatureInput model that reads "
                        "feature maps: run it without --augment")


def scale_image(x: Tensor, ratio: float, stride: int) -> Tensor:
    """``x`` (bs, 3, h, w) resized by ``ratio`` and padded right and bottom to a multiple of ``stride``."""
    if ratio == 1.0:
        return x
    h, w = x.shape[2:]
    size = (int(h * ratio), int(w * ratio))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    ph, pw = (math.ceil(v * ratio / stride) * stride for v in (h, w))
    return F.pad(x, [0, pw - size[1], 0, ph - size[0]], value=PAD_VALUE)


def level_rows(output: AnchorRows) -> list[int]:
    """Rows per level of a per-anchor output (levels are consecutive in the rows, finest first)."""
    return [m.shape[1] * m.shape[2] * m.shape[3] for m in output.maps]


def augmented_forward(model: nn.Module, x: Tensor, tasks: Sequence[Any], stride: int) -> dict[str, Any]:
    """The model's eval outputs for ``x`` merged over the augmented passes, in the form ``model(x)`` gives them
    (per-anchor tasks: :class:`AnchorRows` without maps)."""
    if not isinstance(x, Tensor):
        raise TypeError("augmented_forward takes an image batch; a FeatureInput model's maps cannot be rescaled")
    anchor = next(t for t in tasks if t.anchor)
    width = x.shape[3]
    rows: dict[str, list[Tensor]] = {t.key: [] for t in tasks}
    for i, (scale, flip) in enumerate(zip(SCALES, FLIPS)):
        outputs = model(scale_image(x.flip(3) if flip else x, scale, stride))
        counts = level_rows(outputs[anchor.key])
        keep = slice(None)
        if len(counts) > 1 and i == 0:
            keep = slice(0, sum(counts[:-1]))  # full size: not the coarsest level
        elif len(counts) > 1 and i == len(SCALES) - 1:
            keep = slice(counts[0], None)  # smallest: not the finest level
        for task in tasks:
            mapped = task.unaugment(outputs[task.key], scale, width if flip else None)
            rows[task.key].append(mapped[:, keep] if task.per_anchor else mapped)
    merged: dict[str, Any] = {}
    for task in tasks:
        parts = rows[task.key]
        merged[task.key] = AnchorRows(torch.cat(parts, 1), []) if task.per_anchor else torch.stack(parts).mean(0)
    return merged
