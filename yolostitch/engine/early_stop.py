"""Early stopping by stock YOLOv5's rule: an epoch whose fitness is no worse than the best so far (``>=``, which
lets the zero-fitness first epochs of a run from scratch count as progress) resets the count of stale epochs;
training stops once that count reaches ``--patience`` (0: never). An epoch without validation (``--noval``)
has no fitness: it neither resets nor extends the count, so ``--noval`` never stops a run early."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    patience: int
    best_fitness: float = 0.0
    stale: int = 0  # epochs since the best one, stock's ``epoch - best_epoch``

    def update(self, fitness: float | None) -> bool:
        """Record an epoch's fitness (None: not validated); whether it is the best so far (ties included, as
        stock writes best.pt)."""
        if fitness is None:
            return False
        if fitness >= self.best_fitness:
            self.best_fitness, self.stale = fitness, 0
            return True
        self.stale += 1
        return False

    @property
    def stop(self) -> bool:
        """Whether ``patience`` epochs in a row were worse than the best."""
        return self.patience > 0 and self.stale >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so that ``--resume`` goes on counting (plain types)."""
        return {"best_fitness": float(self.best_fitness), "stale": int(self.stale)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint from before the count was saved starts it at 0."""
        self.best_fitness = float(state.get("best_fitness", 0.0))
        self.stale = int(state.get("stale", 0))
