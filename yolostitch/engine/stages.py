"""Parameter groups per model part, and training stages that unfreeze parts with their own LR scales.

A stage says which parts train and at what LR multiple, e.g. the three-stage recipe for stitched models::

    stages:                                    # in the hyp YAML, or --stages "det:3,neck+det:3,all"
      - {epochs: 3, train: [det]}              # heads only
      - {epochs: 3, train: [neck, det]}        # + neck
      - {train: all, lr_scale: {backbone: 0.1}}  # everything, backbone at 0.1x, until the last epoch

Parts not trained in a stage are frozen: no gradient, and their BatchNorm layers stay in eval mode so their
running statistics do not drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import FlagError

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass
class Stage:
    train: list[str] | str = "all"  # part names, or "all"
    epochs: int | None = None  # None: until the end of training
    lr_scale: dict[str, float] = field(default_factory=dict)

    def trains(self, part: str) -> bool:
        return self.train == "all" or part in self.train


def parse_stages(spec: str | list | None, parts: list[str]) -> list[Stage]:
    """Stages from the hyp file's list of dicts or a flag string ``"det:3,neck+det:3,all"`` (parts:epochs)."""
    if not spec:
        return [Stage()]
    if isinstance(spec, str):
        items = []
        for chunk in spec.split(","):
            names, _, epochs = chunk.strip().partition(":")
            train = "all" if names == "all" else names.split("+")
            if epochs and not (epochs.strip().isdigit() and int(epochs) > 0):
                raise FlagError(f"--stages {chunk.strip()!r}: the epochs after ':' must be a positive integer, "
                                f"got {epochs!r} (e.g. \"det:3,all\")")
            items.append({"train": train, "epochs": int(epochs) if epochs else None})
        spec = items
    stages = [Stage(train=s.get("train", "all"), epochs=s.get("epochs"), lr_scale=dict(s.get("lr_scale") or {}))
              for s in spec]
    for s in stages:
        unknown = [p for p in ([] if s.train == "all" else s.train) + list(s.lr_scale) if p not in parts]
        if unknown:
            raise FlagError(f"training stage {s}: unknown parts {unknown}; the model's parts are {parts}")
    return stages


def stage_at(stages: list[Stage], epoch: int) -> Stage:
    start = 0
    for stage in stages:
        if stage.epochs is None or epoch < start + stage.epochs:
            return stage
        start += stage.epochs
    return stages[-1]


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Per part, stock's three kinds: biases (no decay, warmed up from warmup_bias_lr), weights, norms."""
    groups = []
    for part, layers in model.parts().items():
        kinds: dict[str, list[torch.Tensor]] = {"bias": [], "weight": [], "norm": []}
        for index in layers:
            for m in model.model[index].modules():
                for name, p in m.named_parameters(recurse=False):
                    kind = "bias" if name == "bias" else "norm" if isinstance(m, NORMS) else "weight"
                    kinds[kind].append(p)
        groups += [{"params": ps, "part": part, "kind": k} for k, ps in kinds.items() if ps]
    return groups


def apply_stage(model: nn.Module, optimizer: torch.optim.Optimizer, stage: Stage,
                always_frozen: set[int]) -> list[nn.Module]:
    """Set requires_grad and each group's ``lr_scale`` for ``stage``; return the norms to keep in eval mode."""
    frozen_norms = []
    for part, layers in model.parts().items():
        for index in layers:
            trains = stage.trains(part) and index not in always_frozen
            for m in model.model[index].modules():
                for p in m.parameters(recurse=False):
                    p.requires_grad = trains
                if not trains and isinstance(m, NORMS):
                    frozen_norms.append(m)
    parts = model.parts()
    for g in optimizer.param_groups:
        if g["part"] in parts:  # other groups (the loss balancer's weights) always train
            g["lr_scale"] = stage.lr_scale.get(g["part"], 1.0) if stage.trains(g["part"]) else 0.0
    return frozen_norms
