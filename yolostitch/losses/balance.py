"""Task balancing: how the per-task losses (det, seg, kpt, cls) combine into one total.

- ``fixed``: the sum of the gained terms; the gains come from the hyp file (stock's way, the default).
- ``uncertainty``: Kendall, Gal & Cipolla (2018): ``sum_t exp(-s_t) * L_t + s_t`` with a learned
  log-variance ``s_t`` per task. Applied to each task's loss relative to its value on the first batch
  (``L_t / L_t0``, then scaled back by ``L_t0``), so the weights start at 1 and move with each task's
  relative progress; applied to raw gained losses (around 0.01-0.1) the optimum ``exp(s_t) = L_t``
  would multiply every gradient by 10-100 and upset the tuned learning rate.
- ``dwa``: Dynamic Weight Average, Liu, Johns & Davison (2019): per epoch,
  ``w_t = T * softmax_t(r_t / temperature)`` with ``r_t = L_t(e-1) / L_t(e-2)``: tasks whose loss falls
  slower get more weight. Weights are 1 for the first two epochs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import FlagError

BALANCERS = ("fixed", "uncertainty", "dwa")
DWA_TEMPERATURE = 2.0


class TaskBalance(nn.Module):
    """``balance(task_losses) -> (total, weights)``; learnable parameters only for ``uncertainty``."""

    def __init__(self, method: str, tasks: list[str]):
        super().__init__()
        if method not in BALANCERS:
            raise FlagError(f"--balance {method!r}: choose one of {list(BALANCERS)}")
        self.method, self.tasks = method, list(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks))) if method == "uncertainty" else None
        self.register_buffer("initial", torch.zeros(len(tasks)))  # uncertainty: L_t0 (0 = not seen yet)
        self.register_buffer("history", torch.zeros(0, len(tasks)))  # dwa: per-epoch mean task losses
        self.register_buffer("dwa_weights", torch.ones(len(tasks)))

    def forward(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        values = torch.stack([losses[t] for t in self.tasks])
        if self.method == "fixed":
            return values.sum(), {}
        if self.method == "dwa":
            w = self.dwa_weights.to(values)
            return (w * values).sum(), {t: float(v) for t, v in zip(self.tasks, w)}
        with torch.no_grad():
            unseen = (self.initial == 0) & (values.detach() > 0)
            self.initial[unseen] = values.detach()[unseen].to(self.initial)
        scale = self.initial.to(values).clamp(min=1e-12)
        s = self.log_vars.to(values)
        total = (scale * (torch.exp(-s) * values / scale + s)).sum()
        return total, {t: float(w) for t, w in zip(self.tasks, torch.exp(-s.detach()))}

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """DWA's update from the epoch's mean task losses (a no-op for the other methods)."""
        if self.method != "dwa":
            return
        row = torch.tensor([[mean_losses.get(t, 0.0) for t in self.tasks]], dtype=self.history.dtype)
        self.history = torch.cat((self.history, row.to(self.history.device)))[-2:]
        if len(self.history) == 2:
            ratio = self.history[1] / self.history[0].clamp(min=1e-12)
            self.dwa_weights = len(self.tasks) * torch.softmax(ratio / DWA_TEMPERATURE, 0)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        history = state_dict.get(prefix + "history")
        if history is not None:  # its length varies with the epochs seen
            self.history = torch.zeros_like(history)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
