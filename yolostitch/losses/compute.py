"""compute_loss for any combination of tasks: one detection assignment shared by every per-anchor task,
each task's own terms and gains (see :mod:`yolostitch.tasks`), and a balancer combining the tasks. With only a
Detect head it equals stock YOLOv5's loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..tasks.base import anchor_of, tasks_of
from .assign import targets_from_batch  # noqa: F401  (public here too)
from .balance import TaskBalance


class ComputeLoss:
    """``loss(outputs, batch) -> (total, terms)``: total = balanced sum of gained terms x batch size (stock).

    ``terms`` holds every detached gained term, task by task in registry order (``box``, ``obj``, ``cls``, then
    ``seg``, ``kpt``, ``kobj``, ``kdist``, ``img_cls`` for the branches present) and, for learned balancing, each
    task's weight (``w_<task>``). ``hyp`` is a hyperparameter dict as in ``data/hyps/hyp.scratch-low.yaml``;
    each task scales its gains for the model's levels (and detection for classes and ``imgsz``, as stock).
    ``balance`` is ``fixed``, ``uncertainty`` or ``dwa`` (see :mod:`.balance`); its parameters
    (``self.balance``) train with the model. ``data_options`` is the data file's mapping: tasks read their
    options from it (the keypoint task ``kpt_sigmas``).
    """

    def __init__(self, model: nn.Module, hyp: dict[str, Any], imgsz: int = 640, balance: str = "fixed",
                 data_options: dict[str, Any] | None = None):
        self.task_list = tasks_of(model)
        self.anchor = anchor_of(self.task_list, "compute_loss")
        self.head = self.anchor.head
        self.hyp = dict(hyp)
        self.nc: int = self.head.nc
        self.gains: dict[str, float] = {}
        for task in self.task_list:
            task.configure(data_options or {})
            self.gains.update(task.gains(self.hyp, self.head.nl, imgsz))
        self.task_terms = {t.name: t.terms for t in self.task_list}
        self.tasks = list(self.task_terms)
        self.balance = TaskBalance(balance, self.tasks)

    def __getattr__(self, name: str) -> Any:
        """A task's own loss setting (e.g. ``sigmas`` of the keypoint task), for benchmarks and tests."""
        for task in self.__dict__.get("task_list", ()):
            if name in vars(task):
                return vars(task)[name]
        raise AttributeError(name)

    def __call__(self, outputs: dict[str, Any], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        shared = self.anchor.shared_targets(outputs[self.anchor.key], batch, self.hyp)
        raw: dict[str, Tensor] = {}
        for task in self.task_list:
            raw.update(task.loss_terms(outputs[task.key], batch, shared))
        gained = {name: raw[name] * self.gains[name] for name in raw}
        per_task = {t: sum(gained[n] for n in terms) for t, terms in self.task_terms.items()}
        total, weights = self.balance(per_task)
        terms = {name: value.detach() for name, value in gained.items()}
        terms.update({f"w_{t}": torch.tensor(w) for t, w in weights.items()})
        return total * shared.images, terms
