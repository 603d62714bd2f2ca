"""Keypoint loss of the pose branch (YOLO-Pose's): per assigned anchor, 1 - OKS per labelled keypoint
(scale-normalised by the target box area, per-keypoint sigmas) and BCE on the visibility logit, plus a
scale-normalised distance term ``kdist``: the L1 distance (|dx| + |dy|) from prediction to target divided by
sqrt(box area), averaged like the OKS term.

Why ``kdist``: OKS alone, ``1 - exp(-e)`` with ``e = d^2 / (8 sigma^2 area)``, has a gradient ``~ exp(-e)``. On real
people a freshly initialised branch starts with most keypoints at e > 10 (faces and extremities of small or
distant persons at e ~ 100), where that gradient is ~0 and they never move (measured per keypoint by
``benchmarks/pose_gradients.py``). The L1 term's gradient does not vanish with distance, so every labelled
keypoint is pulled toward its target from the first step; OKS then refines the near ones. With the ``kdist`` gain
at 0 the loss is the OKS-only one exactly.

Keypoints with v = 0 are unlabelled: they add nothing to the OKS term and are visibility negatives;
instances without any labelled keypoint add nothing at all (partial labels).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .assign import LevelAssignment


def keypoint_terms(maps: Sequence[Tensor], assignments: Sequence[LevelAssignment], keypoints: Tensor,
                   sigmas: Tensor) -> dict[str, Tensor]:
    """Ungained ``kpt`` (1 - OKS), ``kobj`` (visibility BCE) and ``kdist`` (L1 / sqrt(area)) losses summed over
    levels.

    ``maps`` are the raw branch outputs (bs, na, ny, nx, K*D); ``keypoints`` (n, K, 3) are the targets'
    normalised x, y and visibility, indexed by ``assignment.instance``.
    """
    zero = maps[0].new_zeros(())
    kpt, kobj, kdist = zero, zero, zero
    keypoints = keypoints.to(maps[0].device, maps[0].dtype)
    labelled = keypoints[..., 2] > 0  # (n, K)
    sigmas = sigmas.to(maps[0])
    for p, a in zip(maps, assignments):
        use = labelled[a.instance].any(1)
        if not use.any():
            continue
        ny, nx = p.shape[2:4]
        raw = p[a.batch[use], a.anchor[use], a.gj[use], a.gi[use]]
        k = keypoints.shape[1]
        raw = raw.view(len(raw), k, -1)
        visible = labelled[a.instance[use]]  # (m, K)
        cell = torch.stack((a.gi[use], a.gj[use]), 1).to(raw).unsqueeze(1)
        true_xy = keypoints[a.instance[use], :, :2] * torch.tensor([nx, ny], device=p.device, dtype=p.dtype) - cell
        pred_xy = raw[..., :2] * 2 - 0.5
        d2 = (pred_xy - true_xy).pow(2).sum(-1)
        area = a.box[use, 2:4].prod(1, keepdim=True)  # target box area in grid units
        e = d2 / ((2 * sigmas) ** 2 * (area + 1e-9) * 2)
        per_instance_scale = k / visible.sum(1, keepdim=True).clamp(min=1)
        kpt = kpt + (per_instance_scale * (1 - torch.exp(-e)) * visible).mean()
        l1 = (pred_xy - true_xy).abs().sum(-1) / (area + 1e-9).sqrt()  # in box sizes: every scale counts alike
        kdist = kdist + (per_instance_scale * l1 * visible).mean()
        if raw.shape[-1] == 3:
            kobj = kobj + F.binary_cross_entropy_with_logits(raw[..., 2], visible.to(raw.dtype))
    return {"kpt": kpt, "kobj": kobj, "kdist": kdist}
