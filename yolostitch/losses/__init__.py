"""Training losses: shared YOLOv5 target assignment and the detection loss terms."""

from .assign import LevelAssignment, assign_targets
from .compute import ComputeLoss, targets_from_batch

__all__ = ["ComputeLoss", "LevelAssignment", "assign_targets", "targets_from_batch"]
