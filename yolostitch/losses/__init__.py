"""Training losses: one YOLOv5 target assignment shared by every branch, per-task terms, task balancing."""

from .assign import LevelAssignment, assign_targets
from .balance import BALANCERS, TaskBalance
from .compute import ComputeLoss, targets_from_batch

__all__ = ["BALANCERS", "ComputeLoss", "LevelAssignment", "TaskBalance", "assign_targets", "targets_from_batch"]
