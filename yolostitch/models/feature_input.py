"""``FeatureInput``: a model input that is a precomputed feature map instead of the image.

A YAML row ``[-1, 1, FeatureInput, [key, c_in, s_in, c_out, {options}]]`` declares the contract of one external
tensor (timm's ``feature_info``: a name, its channels, its stride in input pixels) and maps it into the model
with a learnable adapter: an optional normaliser, resampling when the neck wants another stride, then a 1x1
Conv + BN + SiLU. ``from`` is ignored: the tensor comes from the model's input by ``key`` (a name, or the
position in a list). ``c_out`` is scaled by ``width_multiple`` like every other row; without it the adapter
keeps ``c_in`` channels (the neck's layers take whatever their inputs' shapes say).

Options (a mapping as the last argument): ``stride`` the output stride (default ``s_in``; e.g. 16 for a
stride-14 ViT), ``norm`` one of ``none`` (default), ``standardize`` (per-channel, from running statistics)
or ``layernorm`` (over channels at each location, for token features), ``act`` (default true: SiLU after BN).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from ..errors import YolostitchError
from .registry import ConfigError, Row, register_module
from .shape import Shape, describe_contract, read_contract

NORMS = ("none", "standardize", "layernorm")
OPTIONS = {"stride", "norm", "act"}


class FeatureContractError(YolostitchError, ValueError):
    """A tensor given to a FeatureInput that breaks its declared contract; the message names the layer."""


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each location of a (B, C, H, W) map (token features laid out as a grid)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@register_module(strings={0: None, "norm": NORMS})  # the key is any plain word; the norm one of NORMS
class FeatureInput(nn.Module):
    """Adapter from an external feature map (``c_in`` channels at stride ``s_in``) to ``c_out`` at ``s_out``."""

    def __init__(self, key: str | int, c_in: int, s_in: int, c_out: int | None = None, s_out: int | None = None,
                 norm: str = "none", act: bool = True, name: str = ""):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm {norm!r} is not one of {NORMS}")
        for label, value in (("c_in", c_in), ("s_in", s_in), ("c_out", c_out), ("stride", s_out)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        self.key, self.c_in, self.s_in = key, c_in, s_in
        self.c_out, self.s_out = c_out or c_in, s_out or s_in
        self.name = name or f"FeatureInput {key!r}"
        self.position = 0  # index among the model's FeatureInput layers (for list inputs); set by the model
        self.norm = {"none": nn.Identity, "standardize": lambda c: nn.BatchNorm2d(c, affine=False),
                     "layernorm": ChannelLayerNorm}[norm](c_in)
        self.norm_kind = norm
        self.conv = Conv(c_in, self.c_out, 1, 1, act=act)

    @classmethod
    def from_row(cls, row: Row) -> tuple[nn.Module, Shape]:
        args = list(row.args)
        options: Mapping[str, Any] = args.pop() if args and isinstance(args[-1], dict) else {}
        unknown = set(options) - OPTIONS
        if unknown:
            raise row.error(f"FeatureInput options {sorted(unknown)} are unknown; allowed: {sorted(OPTIONS)}")
        if not 3 <= len(args) <= 4:
            raise row.error(f"FeatureInput args are [key, c_in, s_in, c_out?, {{options}}], got {row.args}")
        key, c_in, s_in = args[:3]
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise row.error(f"FeatureInput key must be a name or a position, got {key!r}")
        c_out = row.width(args[3]) if len(args) == 4 else None
        module = cls(key, c_in, s_in, c_out, options.get("stride"), options.get("norm", "none"),
                     options.get("act", True), name=f"layer {row.index} (FeatureInput {key!r})")
        return module, Shape(module.c_out, module.s_out)

    def contract(self) -> Shape:
        """The map this layer takes (before its adapter resamples it)."""
        return Shape(self.c_in, self.s_in)

    def select(self, features: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
        """This layer's tensor from the model input: by name from a mapping, by position from a list."""
        if isinstance(features, Mapping):
            if self.key in features:
                return features[self.key]
            raise FeatureContractError(f"{self.name}: expects feature {self.key!r}, the input has "
                                       f"{sorted(map(str, features))}")
        index = self.key if isinstance(self.key, int) else self.position
        if not 0 <= index < len(features):
            raise FeatureContractError(f"{self.name}: expects the feature at position {index}, the input has "
                                       f"{len(features)} tensor(s)")
        return features[index]

    def check(self, x: Any) -> None:
        """Raise :class:`FeatureContractError` if ``x`` breaks the declared contract."""
        if not isinstance(x, torch.Tensor):
            raise FeatureContractError(f"{self.name}: expects a tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise FeatureContractError(f"{self.name}: expects a (batch, {self.c_in}, H, W) map, got shape "
                                       f"{tuple(x.shape)}")
        if not x.is_floating_point():
            raise FeatureContractError(f"{self.name}: expects a floating-point tensor, got {x.dtype}")
        if x.shape[1] != self.c_in:
            raise FeatureContractError(f"{self.name}: expects {self.c_in} channels (stride {self.s_in}), got "
                                       f"{x.shape[1]} (shape {tuple(x.shape)})")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise FeatureContractError(f"{self.name}: {bad} non-finite value(s) (NaN or inf) in the input")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The conv's input: the map cast to the adapter's dtype, normalised, resampled to ``s_out``."""
        x = self.norm(x.to(self.conv.conv.weight.dtype))
        if self.s_out != self.s_in:
            h, w = x.shape[2:]
            size = (math.ceil(h * self.s_in / self.s_out), math.ceil(w * self.s_in / self.s_out))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.prepare(x))


def check_feature_sizes(layers: Sequence[FeatureInput], tensors: Sequence[torch.Tensor],
                        image_size: tuple[int, int] | None = None) -> None:
    """All inputs must describe one image: each map's size times its stride gives the input size it came from,
    and those must agree (up to a cell of rounding) with the image if given, else with most of the maps (so
    the odd one out is the one named)."""
    extents = [tuple(int(d) * layer.s_in for d in t.shape[2:]) for layer, t in zip(layers, tensors)]
    if image_size is not None:
        ref_name, ref = "the image", tuple(image_size)
    else:
        ref = max(extents, key=extents.count)
        ref_name = next(layer.name for layer, e in zip(layers, extents) if e == ref)
    for layer, extent in zip(layers, extents):
        if any(abs(e - r) >= layer.s_in for e, r in zip(extent, ref)):
            h, w = extent
            raise FeatureContractError(
                f"{layer.name}: a {h // layer.s_in}x{w // layer.s_in} map at the declared stride {layer.s_in} "
                f"covers {h}x{w} input pixels, but {ref_name} covers {ref[0]}x{ref[1]}: wrong stride or "
                "spatial size")


def feature_rows(config: dict[str, Any]) -> list[tuple[str, int, list]]:
    """(section, row index, row) of every FeatureInput row, in model order."""
    rows = [("backbone", j, r) for j, r in enumerate(config.get("backbone") or [])]
    rows += [("head", j, r) for j, r in enumerate(config.get("head") or [])]
    return [(s, j, r) for s, j, r in rows if r[2] == "FeatureInput"]


def apply_feature_contract(config: dict[str, Any], contract: Mapping[str, Shape],
                           source: str = "features") -> tuple[dict[str, Any], list[str]]:
    """Fit a model config to the feature maps a cache or extractor provides; return the new config and notes.

    Each FeatureInput row takes the map of its key, or, when no key matches and the counts agree, the map at
    its position in stride order. The declared ``c_in``/``s_in`` are checked against the provider and replaced
    by its values; the output side stays, so the neck is unchanged (a different stride gets resampled).
    """
    config = copy.deepcopy(config)
    rows = feature_rows(config)
    if not rows:
        raise ConfigError(f"the model has no FeatureInput layer, so it cannot take {source}")
    provided = sorted(read_contract(contract, source).items(), key=lambda kv: kv[1].stride)
    by_name = dict(provided)
    named = all(isinstance(r[3][0], str) and r[3][0] in by_name for _, _, r in rows)
    if not named and len(rows) != len(provided):
        keys = [str(r[3][0]) for _, _, r in rows]
        raise ConfigError(f"the model's FeatureInput keys {keys} are not all in {source} "
                          f"({describe_contract(dict(provided))}), and "
                          f"there are {len(provided)} maps for {len(rows)} FeatureInput layers to pair by stride")
    notes = []
    for position, (section, j, row) in enumerate(rows):
        args = list(row[3])
        options = dict(args.pop()) if args and isinstance(args[-1], dict) else {}
        key, c_in, s_in = args[:3]
        new_key, shape = (key, by_name[key]) if named else provided[position]
        if (new_key, shape.channels, shape.stride) != (key, c_in, s_in):
            notes.append(f"{section}[{j}] FeatureInput: declared {key!r} {c_in}ch/s{s_in}, {source} gives "
                         f"{new_key!r} {shape}")
        if shape.stride != s_in and "stride" not in options:
            options["stride"] = s_in  # keep the stride the neck was written for
        c_out = args[3:4]  # as written (scaled by width_multiple); absent: the output follows the new c_in
        row[3] = [new_key, shape.channels, shape.stride, *c_out] + ([options] if options else [])
    return config, notes
