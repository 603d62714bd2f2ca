"""Stitch initialisation: start a FeatureInput model close to the image model whose neck and heads it inherits.

Each adapter (norm, resample, 1x1 conv, BN, SiLU) is fitted by least squares so that on the same images its
output matches what the image model's backbone layer gave that neck: ridge regression of the backbone's
pre-activation (SiLU inverted) on the external map, pixel by pixel. BN is then set to the statistics of the
fitted conv's output so that batch statistics in training reproduce the fit rather than undo it.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from ..errors import ConfigError

from ..models.feature_input import FeatureInput

SILU_MIN_AT = -1.2784645  # argmin of z * sigmoid(z)
SILU_MIN = -0.2784645


def silu_inverse(y: torch.Tensor, iters: int = 32) -> torch.Tensor:
    """The z >= argmin with z * sigmoid(z) = y (bisection; y below SiLU's minimum maps to the argmin)."""
    y = y.clamp(min=SILU_MIN + 1e-6)
    positive = y >= 0
    lo = torch.where(positive, y, torch.full_like(y, SILU_MIN_AT))
    hi = torch.where(positive, y - SILU_MIN, torch.zeros_like(y))  # z - silu(z) <= -SILU_MIN for z >= 0
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = mid * torch.sigmoid(mid) < y
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


@torch.no_grad()
def fit_adapters(model: nn.Module, source: nn.Module, pairs: Iterable[tuple[torch.Tensor, Mapping[str, torch.Tensor]]],
                 backbone_map: Mapping[int, int], ridge: float = 1e-3) -> dict[int, float]:
    """Fit every FeatureInput of ``model`` in ``backbone_map`` (its layer -> ``source``'s layer) on ``pairs`` of
    (0..1 images, their external maps); return the R² of each fit (on the pre-activation targets)."""
    adapters = {t: model.model[t] for t in backbone_map if isinstance(model.model[t], FeatureInput)}
    if not adapters:
        raise ConfigError("stitch initialisation: no FeatureInput layer of the model stands in for a layer of the "
                          "image model (their head rows do not line up)")
    was_training = model.training
    model.eval()
    source.eval()
    collected: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {t: [] for t in adapters}
    for images, maps in pairs:
        outputs = source.forward_layers(images, set(backbone_map[t] for t in adapters))
        for t, layer in adapters.items():
            x, y = layer.select(maps).float(), outputs[backbone_map[t]].float()
            collected[t].append((x, y))
    scores = {}
    for t, layer in adapters.items():
        scores[t] = _fit_one(layer, collected[t], ridge)
    model.train(was_training)
    return scores


def _fit_one(layer: FeatureInput, pairs: list[tuple[torch.Tensor, torch.Tensor]], ridge: float) -> float:
    if isinstance(layer.norm, nn.BatchNorm2d):  # standardise with the maps' own statistics first
        xs = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x, _ in pairs])
        layer.norm.running_mean.copy_(xs.mean(0))
        layer.norm.running_var.copy_(xs.var(0))
    conv, bn = layer.conv.conv, layer.conv.bn
    c_in, c_out = conv.in_channels, conv.out_channels
    act = not isinstance(layer.conv.act, nn.Identity)
    xtx = torch.zeros(c_in + 1, c_in + 1, dtype=torch.float64)
    xtz = torch.zeros(c_in + 1, c_out, dtype=torch.float64)
    z_sum = torch.zeros(c_out, dtype=torch.float64)
    z_sq, n = 0.0, 0
    for x, y in pairs:
        prepared = layer.prepare(x)
        if prepared.shape[2:] != y.shape[2:] or y.shape[1] != c_out:
            raise ConfigError(f"stitch initialisation: {layer.name} gives {c_out} channels at "
                              f"{tuple(prepared.shape[2:])}, the image model's layer gives {tuple(y.shape[1:])}")
        z = silu_inverse(y) if act else y
        xm = prepared.permute(0, 2, 3, 1).reshape(-1, c_in).double().cpu()  # the sums are kept on the CPU in float64
        xm = torch.cat([xm, torch.ones(len(xm), 1, dtype=xm.dtype)], 1)
        zm = z.permute(0, 2, 3, 1).reshape(-1, c_out).double().cpu()
        xtx += xm.T @ xm
        xtz += xm.T @ zm
        z_sum += zm.sum(0)
        z_sq += float((zm ** 2).sum())
        n += len(xm)
    # centred normal equations: the ridge is relative to the maps' variance, not to their (often large) means
    mean_x, mean_z = xtx[:c_in, c_in] / n, z_sum / n
    cov_x = xtx[:c_in, :c_in] / n - torch.outer(mean_x, mean_x)
    cov_xz = xtz[:c_in] / n - torch.outer(mean_x, mean_z)
    reg = torch.eye(c_in, dtype=torch.float64) * ridge * cov_x.diagonal().mean().clamp(min=1e-12)
    weight = torch.linalg.solve(cov_x + reg, cov_xz)  # (c_in, c_out)
    bias = mean_z - weight.T @ mean_x
    var_z = z_sq / n - float((mean_z ** 2).sum())
    # residual variance: var(z) - 2 tr(W' cov_xz) + tr(W' cov_x W)
    residual = var_z - 2 * float((weight * cov_xz).sum()) + float((weight * (cov_x @ weight)).sum())
    mean_u = weight.T @ mean_x
    var_u = ((cov_x @ weight) * weight).sum(0).clamp(min=1e-12)
    conv.weight.copy_(weight.T.reshape(c_out, c_in, 1, 1).to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.zero_()
    bn.running_mean.copy_(mean_u.float())
    bn.running_var.copy_(var_u.float())
    bn.weight.copy_(torch.sqrt(var_u + bn.eps).float())
    bn.bias.copy_((mean_u + bias).float())
    return 1.0 - residual / max(var_z, 1e-30)

