"""Model building: registry, YAML configs, blocks and the stitched model."""

from . import blocks  # noqa: F401  (registers the built-in blocks)
from .feature_input import FeatureContractError, FeatureInput
from .registry import ConfigError, Row, register_module, registered_names
from .shape import Shape
from .stitch import StitchModel, build_model

__all__ = ["ConfigError", "FeatureContractError", "FeatureInput", "Row", "Shape", "StitchModel", "build_model", "register_module", "registered_names"]
