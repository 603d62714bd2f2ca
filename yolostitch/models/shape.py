"""What a layer produces: the contract threaded through the YAML rows (detectron2's ``ShapeSpec``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """A feature map's channel count and its stride in input pixels."""

    channels: int
    stride: int

    def scaled(self, channels: int | None = None, stride_factor: float = 1.0) -> Shape:
        """A new shape with other channels and the stride multiplied by ``stride_factor``."""
        stride = self.stride * stride_factor
        if abs(stride - round(stride)) > 1e-9 or round(stride) < 1:
            raise ValueError(f"stride {self.stride} x {stride_factor} is not a whole number of input pixels")
        return Shape(self.channels if channels is None else channels, int(round(stride)))
