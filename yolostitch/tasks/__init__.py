"""Tasks: what each kind of head means outside the model (labels, loss, decoding, metrics, drawing, export).

See :mod:`.base` for the interface and :mod:`.registry` for how a task (built-in or a plugin's) registers.
The built-in tasks register here, in the order they run, print and export: detection (the anchor), instance
masks, keypoints, image classes.
"""

from .base import (CLASS_FIELD, ImageTruth, Meter, SharedTargets, Task, anchor_of, head_module, required_hyp,
                   task_hyp_keys, tasks_for_outputs, tasks_of)
from .registry import TASKS, register_task
from . import detection, masks, keypoints, image_classes  # noqa: E402,F401  (register the built-in tasks)

__all__ = ["CLASS_FIELD", "ImageTruth", "Meter", "SharedTargets", "TASKS", "Task", "anchor_of", "head_module", "register_task",
           "required_hyp", "task_hyp_keys", "tasks_for_outputs", "tasks_of"]
