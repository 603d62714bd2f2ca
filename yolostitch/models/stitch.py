"""StitchModel: the layer graph built from a model config, returning named task outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .builder import MODEL_INPUT, Layer, build_layers
from .config import load_model_config
from .registry import ConfigError


class StitchModel(nn.Module):
    """A YOLOv5-schema model. ``forward`` returns ``{task: head output}`` (e.g. ``{"det": ...}``).

    The state-dict layout equals stock YOLOv5's (``model.{i}.…``), so stock weights load by name.
    """

    def __init__(self, config: dict[str, Any], source: str = "<dict>", in_channels: int = 3):
        super().__init__()
        self.yaml = config  # stock name: the config this model was built from
        self.layers: list[Layer] = build_layers(config, source, in_channels)
        self.model = nn.Sequential(*(layer.module for layer in self.layers))
        self.heads = _head_names(self.layers)
        _check_per_anchor_branches(self.layers, self.heads, source)
        self._keep = {s for layer in self.layers for s in layer.sources} | set(self.heads.values())
        nc = config.get("nc")
        self.names: dict[int, str] = {i: f"class{i}" for i in range(nc)} if isinstance(nc, int) else {}
        _stock_init(self)

    @property
    def nc(self) -> int | None:
        return self.yaml.get("nc")

    @property
    def kpt_shape(self) -> list[int] | None:
        return self.yaml.get("kpt_shape")

    @property
    def stride(self) -> torch.Tensor:
        """Strides of the first detection head's levels (stock ``model.stride``), else of the last layer."""
        for index in self.heads.values():
            if hasattr(self.model[index], "stride"):
                return self.model[index].stride
        last = [layer.shape for layer in self.layers if layer.shape is not None][-1]
        return torch.tensor([float(last.stride)])

    def parts(self) -> dict[str, list[int]]:
        """Layer indices per part: ``backbone`` (the backbone rows), ``neck`` (other head rows), and one entry
        per task head (``det``, ...). Optimiser groups, freezing and training stages work on these."""
        n_backbone = len(self.yaml["backbone"])
        heads = set(self.heads.values())
        parts = {"backbone": list(range(n_backbone)),
                 "neck": [i for i in range(n_backbone, len(self.layers)) if i not in heads]}
        parts.update({task: [index] for task, index in self.heads.items()})
        return parts

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        outputs: list[Any] = []
        for layer in self.layers:
            inputs = [x if s == MODEL_INPUT else outputs[s] for s in layer.sources]
            y = layer.module(inputs[0] if layer.single else inputs)
            outputs.append(y if layer.index in self._keep else None)
        if not self.heads:  # a backbone-only model returns its last feature map
            return {"features": y}
        return {task: outputs[index] for task, index in self.heads.items()}

    def info(self, imgsz: int = 640, verbose: bool = True) -> dict[str, Any]:
        """Print the layer table and a stock-style summary line; return the figures."""
        from .summary import model_summary

        return model_summary(self, imgsz=imgsz, verbose=verbose)


def build_model(cfg: str | Path | dict[str, Any], nc: int | None = None, ch: int | None = None,
                kpt_shape: list[int] | None = None) -> StitchModel:
    """Build a model from a YAML path, a built-in model name (``yolov5s.yaml``) or a config dict.

    ``nc``, ``ch`` and ``kpt_shape`` override the config's class count, input channels and keypoint shape
    (``kpt_shape`` only where the config uses keypoints).
    """
    config, source = load_model_config(cfg)
    if nc is not None and nc != config.get("nc"):
        config["nc"] = int(nc)
    if kpt_shape is not None and "kpt_shape" in config:
        config["kpt_shape"] = [int(v) for v in kpt_shape]
    in_channels = int(ch if ch is not None else config.get("ch", 3))
    config["ch"] = in_channels
    return StitchModel(config, source, in_channels)


def _head_names(layers: list[Layer]) -> dict[str, int]:
    heads: dict[str, int] = {}
    for layer in layers:
        task = getattr(layer.module, "task", None)
        if task is not None:
            heads[task if task not in heads else f"{task}@{layer.index}"] = layer.index
    return heads


def _check_per_anchor_branches(layers: list[Layer], heads: dict[str, int], source: str) -> None:
    """Mask and keypoint branches share the detector's target assignment and NMS: they need a detector on the
    same input levels with the same anchors per location."""
    det = layers[heads["det"]] if "det" in heads else None
    for layer in layers:
        module = layer.module
        if module.__class__.__name__ == "Detect" or not hasattr(module, "na") or getattr(module, "task", None) is None:
            continue
        where = f"{source} layer {layer.index} ({layer.module_name} from {layer.sources})"
        if det is None:
            raise ConfigError(f"{where}: a per-anchor branch needs a Detect layer to share its anchors with; "
                              "the model has none")
        if layer.sources != det.sources or module.na != det.module.na:
            raise ConfigError(f"{where}: must take the same inputs and anchors per location as Detect "
                              f"(layer {det.index}: from {det.sources}, {det.module.na} anchors), got from "
                              f"{layer.sources} with {module.na} anchors")


def _stock_init(model: nn.Module) -> None:
    """Stock YOLOv5's initialisation: BatchNorm eps/momentum and in-place activations."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True
