"""yolostitch: recombine YOLOv5 backbones, adapters and heads from a YAML file."""

from . import _env  # noqa: F401  (must run before anything imports ultralytics)
from . import heads  # noqa: F401  (registers the heads)
from . import tasks  # noqa: F401  (registers the built-in tasks)
from .models import ConfigError, Row, Shape, StitchModel, build_model, register_module, registered_names
from .weights import load_model

__version__ = "0.1.0"
__all__ = ["ConfigError", "Row", "Shape", "StitchModel", "build_model", "load_model", "register_module",
           "registered_names", "__version__"]
