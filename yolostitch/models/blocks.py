"""Blocks usable by name in a model YAML, each with the rule that gives its output shape.

Names a stock YOLOv5 YAML uses (``Conv``, ``C3``, ``SPPF``, ``Bottleneck``, ...) keep stock YOLOv5
semantics, so stock YAMLs and checkpoints work unchanged. They reuse ultralytics' implementation where it
still equals stock (a test compares every one with the stock code); where ultralytics has drifted
(``SPPF``'s first conv lost its activation, ``Bottleneck``'s first conv became 3x3, and so
in ``BottleneckCSP``) the stock semantics
is kept here. Every ultralytics block is also reachable as ``ultralytics.<Name>`` with its own semantics.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from ultralytics.nn import modules as ul

from .registry import Row, register_module
from .shape import Shape

StrideRule = Callable[[list[Any]], float]  # full constructor args -> stride factor


def _arg(index: int, default: Any) -> Callable[[list[Any]], Any]:
    return lambda args: args[index] if len(args) > index else default


class SPPF(nn.Module):
    """YOLOv5's fast spatial pyramid pooling: three chained max-pools, both 1x1 convs activated."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = ul.Conv(c1, hidden, 1, 1)
        self.cv2 = ul.Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [self.cv1(x)]
        for _ in range(3):
            pooled.append(self.m(pooled[-1]))
        return self.cv2(torch.cat(pooled, 1))


def yolov5_bottleneck(c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> nn.Module:
    """YOLOv5's Bottleneck (1x1 then 3x3 conv); stock YAML argument order."""
    return ul.Bottleneck(c1, c2, shortcut, g, k=((1, 1), (3, 3)), e=e)


def yolov5_bottleneck_csp(c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
                          e: float = 0.5) -> nn.Module:
    """YOLOv5's BottleneckCSP: ultralytics' block with YOLOv5's (1x1 then 3x3) inner bottlenecks."""
    block = ul.BottleneckCSP(c1, c2, n, shortcut, g, e)
    hidden = int(c2 * e)
    block.m = nn.Sequential(*(yolov5_bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))
    return block


def _detect_outputs(config: dict[str, Any]) -> int | None:
    """Channels of a Detect output map; stock YOLOv5 leaves a conv of exactly that width unscaled."""
    anchors, nc = config.get("anchors"), config.get("nc")
    if not isinstance(nc, int) or anchors is None:
        return None
    na = len(anchors[0]) // 2 if isinstance(anchors, (list, tuple)) else int(anchors)
    return na * (nc + 5)


def channel_block(cls: Callable[..., nn.Module], *, stride: StrideRule = lambda a: 1,
                  repeats_at: int | None = None) -> Callable[[Row], tuple[nn.Module, Shape]]:
    """Builder for the stock convention: YAML args ``[c2, *rest]`` -> ``cls(c1, c2, *rest)``.

    ``c2`` is scaled by width_multiple; with ``repeats_at`` the row's repeat count is inserted at that
    position (as stock does for C3); ``stride`` maps the full argument list to the stride factor.
    """

    def build(row: Row) -> tuple[nn.Module, Shape]:
        if not row.args or not isinstance(row.args[0], int):
            raise row.error(f"{row.module} needs its output channels (an int) as first argument, got {row.args}")
        c2 = row.args[0]
        if c2 != _detect_outputs(row.config):
            c2 = row.width(c2)
        args = [row.input.channels, c2, *row.args[1:]]
        if repeats_at is not None:
            args.insert(repeats_at, row.number)
        module = row.construct(cls, *args)
        try:
            return module, row.input.scaled(c2, stride(args))
        except (TypeError, ValueError) as e:
            raise row.error(f"cannot derive the output stride: {e}") from None

    return build


def channel_preserving(cls: Callable[..., nn.Module], *, pass_channels: bool = True):
    """Builder for blocks that keep their input shape: ``cls(c1, *args)`` (or ``cls(*args)``)."""

    def build(row: Row) -> tuple[nn.Module, Shape]:
        args = [row.input.channels, *row.args] if pass_channels else list(row.args)
        return row.construct(cls, *args), row.input

    return build


@register_module("Concat")
def _concat(row: Row) -> tuple[nn.Module, Shape]:
    dim = row.args[0] if row.args else 1
    if dim != 1:
        raise row.error(f"Concat joins channels (dimension 1); dimension {dim} is not supported")
    strides = {s.stride for s in row.inputs}
    if len(strides) != 1:
        raise row.error(f"Concat inputs {row.sources} have different strides {[s.stride for s in row.inputs]}")
    return ul.Concat(1), Shape(sum(s.channels for s in row.inputs), strides.pop())


UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")  # the modes for (B, C, H, W) maps


def _upsample(row: Row) -> tuple[nn.Module, Shape]:
    size, scale, mode = (list(row.args) + [None, None, "nearest"][len(row.args):])[:3]
    if size is not None or not isinstance(scale, (int, float)) or scale <= 0:
        raise row.error(f"Upsample needs [None, scale_factor, mode] so the output stride is known; got {row.args}")
    module = row.construct(nn.Upsample, *row.args)
    return module, row.input.scaled(stride_factor=1 / scale)


def _max_pool(row: Row) -> tuple[nn.Module, Shape]:
    kernel = _arg(0, None)(row.args)
    stride = _arg(1, None)(row.args) or kernel
    return row.construct(nn.MaxPool2d, *row.args), row.input.scaled(stride_factor=stride)


def _register_all() -> None:
    conv_stride = _arg(3, 1)
    # ultralytics' blocks with the shape rule of each: (builder, consumes the repeat count)
    ultralytics_blocks = {
        "Conv": (channel_block(ul.Conv, stride=conv_stride), False),
        "GhostConv": (channel_block(ul.GhostConv, stride=conv_stride), False),
        "DWConv": (channel_block(ul.DWConv, stride=conv_stride), False),
        "RepConv": (channel_block(ul.RepConv, stride=conv_stride), False),
        "LightConv": (channel_block(ul.LightConv), False),
        "Focus": (channel_block(ul.Focus, stride=lambda a: 2 * conv_stride(a)), False),
        "GhostBottleneck": (channel_block(ul.GhostBottleneck, stride=conv_stride), False),
        "SCDown": (channel_block(ul.SCDown, stride=conv_stride), False),
        "ADown": (channel_block(ul.ADown, stride=lambda a: 2), False),
        "ConvTranspose": (channel_block(ul.ConvTranspose, stride=lambda a: 1 / _arg(3, 2)(a)), False),
        "Bottleneck": (channel_block(ul.Bottleneck), False),
        "SPP": (channel_block(ul.SPP), False),
        "SPPF": (channel_block(ul.SPPF), False),
        "SPPELAN": (channel_block(ul.SPPELAN), False),
        "ELAN1": (channel_block(ul.ELAN1), False),
        "CIB": (channel_block(ul.CIB), False),
        "PSA": (channel_block(ul.PSA), False),
        "C1": (channel_block(ul.C1, repeats_at=2), True),
        "C2": (channel_block(ul.C2, repeats_at=2), True),
        "C2f": (channel_block(ul.C2f, repeats_at=2), True),
        "C2fCIB": (channel_block(ul.C2fCIB, repeats_at=2), True),
        "C2PSA": (channel_block(ul.C2PSA, repeats_at=2), True),
        "C3": (channel_block(ul.C3, repeats_at=2), True),
        "C3k2": (channel_block(ul.C3k2, repeats_at=2), True),
        "C3x": (channel_block(ul.C3x, repeats_at=2), True),
        "C3Ghost": (channel_block(ul.C3Ghost, repeats_at=2), True),
        "C3TR": (channel_block(ul.C3TR, repeats_at=2), True),
        "BottleneckCSP": (channel_block(ul.BottleneckCSP, repeats_at=2), True),
        "RepC3": (channel_block(ul.RepC3, repeats_at=2), True),
        "A2C2f": (channel_block(ul.A2C2f, repeats_at=2), True),
        "RepNCSPELAN4": (channel_block(ul.RepNCSPELAN4, repeats_at=4), True),
        "CBAM": (channel_preserving(ul.CBAM), False),
        "ChannelAttention": (channel_preserving(ul.ChannelAttention), False),
        "SpatialAttention": (channel_preserving(ul.SpatialAttention, pass_channels=False), False),
        "Concat": (_concat, False),
    }
    # where ultralytics drifted from stock YOLOv5, the plain (stock) name keeps stock semantics
    stock_semantics = {"Bottleneck": channel_block(yolov5_bottleneck), "SPPF": channel_block(SPPF),
                       "BottleneckCSP": channel_block(yolov5_bottleneck_csp, repeats_at=2)}
    for name, (builder, repeats) in ultralytics_blocks.items():
        register_module(f"ultralytics.{name}", repeats_in_args=repeats)(builder)
        if name != "Concat":  # registered above under its plain name
            register_module(name, repeats_in_args=repeats)(stock_semantics.get(name, builder))

    # torch's blocks with the string arguments each takes (YAML position -> allowed words)
    torch_blocks = {
        "Upsample": (_upsample, {2: UPSAMPLE_MODES}),
        "MaxPool2d": (_max_pool, {}),
        "BatchNorm2d": (channel_preserving(nn.BatchNorm2d), {}),
        "Identity": (channel_preserving(nn.Identity, pass_channels=False), {}),
        "ConvTranspose2d": (channel_block(nn.ConvTranspose2d, stride=lambda a: 1 / _arg(3, 1)(a)),
                            {8: ("zeros",)}),  # padding_mode: the only one transposed convs support
    }
    for name, (builder, strings) in torch_blocks.items():
        register_module(f"nn.{name}", strings=strings)(builder)
        register_module(name, strings=strings)(builder)


_register_all()
