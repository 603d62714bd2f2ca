"""Side-by-side comparison of models (and stock YOLOv5) on one dataset with one recipe: ``compare.py``."""

from .runner import CompareOptions, compare

__all__ = ["CompareOptions", "compare"]
