"""Task heads; each registers itself under its YAML name."""

from .detect import Detect

__all__ = ["Detect"]
