"""What heads return, per mode: small declared types instead of tuples told apart by their shape.

* training, per-anchor heads: their raw maps, ``list[(bs, na, ny, nx, outputs)]`` (:data:`LevelMaps`);
  the mask branch adds its prototypes (:class:`MaskMaps`); an image-level head its logits (a tensor).
* eval and export: per-anchor heads give :class:`AnchorRows` (decoded rows, plus the raw maps, left empty
  in export mode); the mask branch :class:`MaskRows`; an image-level head its probabilities (a tensor).

NamedTuples, so ``decoded, maps = model(x)["det"]`` keeps working, and tracing flattens them.
"""

from __future__ import annotations

from typing import List, NamedTuple

from torch import Tensor

LevelMaps = List[Tensor]  # per level (bs, na, ny, nx, outputs per anchor), fp32


class AnchorRows(NamedTuple):
    """Eval/export output of a per-anchor head: one decoded row per anchor, in the order all branches share."""

    rows: Tensor  # (bs, N, outputs per anchor)
    maps: LevelMaps  # the raw maps (empty in export mode)


class MaskMaps(NamedTuple):
    """Training output of the mask branch."""

    maps: LevelMaps  # coefficient maps per level
    protos: Tensor  # (bs, nm, H/4, W/4)


class MaskRows(NamedTuple):
    """Eval/export output of the mask branch: coefficients in the detection rows' order, and the prototypes."""

    coefficients: Tensor  # (bs, N, nm)
    protos: Tensor  # (bs, nm, H/4, W/4)
