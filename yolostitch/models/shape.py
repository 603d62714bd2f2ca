"""What a feature map is: the one type for its contract (detectron2's ``ShapeSpec``, timm's ``feature_info``).

The builder threads a :class:`Shape` through the YAML rows; a feature provider (an extractor, a feature cache)
states its maps as ``{key: Shape}``, and a FeatureInput layer declares the Shape it takes. On disk (cache index,
checkpoint, export metadata) a Shape is the plain mapping ``{"channels": C, "stride": s}`` of :meth:`Shape.record`,
the form earlier versions wrote, so old files read back through :func:`read_contract`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError, YolostitchError


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

    def record(self) -> dict[str, int]:
        """The on-disk form: plain types only (checkpoints load with ``weights_only=True``; JSON writes it)."""
        return {"channels": int(self.channels), "stride": int(self.stride)}

    def __str__(self) -> str:
        return f"{self.channels}ch/s{self.stride}"

    @classmethod
    def from_record(cls, value: Any, where: str = "feature map",
                    error: type[YolostitchError] = ConfigError) -> Shape:
        """A Shape from its on-disk form (or a Shape); ``error`` naming ``where`` unless both are positive ints."""
        if isinstance(value, Shape):
            return value
        if not isinstance(value, Mapping) or not {"channels", "stride"} <= set(value):
            raise error(f"{where}: expected {{'channels': C, 'stride': s}}, got {value!r}")
        for label in ("channels", "stride"):
            v = value[label]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise error(f"{where}: {label} must be a positive integer, got {v!r}")
        return cls(int(value["channels"]), int(value["stride"]))


def read_contract(contract: Any, where: str = "feature contract",
                  error: type[YolostitchError] = ConfigError) -> dict[str, Shape]:
    """``{key: Shape}`` from a contract of Shapes or of on-disk records (in its order); ``error`` for anything else."""
    if not isinstance(contract, Mapping):
        raise error(f"{where}: expected a mapping of feature maps, got {type(contract).__name__}")
    return {str(k): Shape.from_record(v, f"{where}: map {k!r}", error) for k, v in contract.items()}


def contract_records(contract: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """The on-disk form of a contract: ``{key: {"channels": C, "stride": s}}``."""
    return {k: shape.record() for k, shape in read_contract(contract).items()}


def describe_contract(contract: Mapping[str, Shape]) -> str:
    """``key Cch/sS, ...``: a contract in one line of a message."""
    return ", ".join(f"{k} {shape}" for k, shape in contract.items())
