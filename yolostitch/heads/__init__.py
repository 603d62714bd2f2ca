"""Task heads; each registers itself under its YAML name and names its task (``det``, ``seg``, ``kpt``, ``cls``)."""

from .classify import Classify
from .detect import Detect
from .keypoints import Keypoints
from .per_anchor import PerAnchorHead
from .segment import Proto, Segment

__all__ = ["Classify", "Detect", "Keypoints", "PerAnchorHead", "Proto", "Segment"]
