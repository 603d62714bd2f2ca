"""StitchModel: the layer graph built from a model config, returning named task outputs."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch
from torch import nn

from .builder import MODEL_INPUT, Layer, build_layers
from .config import load_model_config
from .feature_input import FeatureContractError, FeatureInput, apply_feature_contract, check_feature_sizes
from .registry import ConfigError
from .shape import Shape

logger = logging.getLogger(__name__)

ModelInput = Union[torch.Tensor, Mapping[str, torch.Tensor], Sequence[torch.Tensor]]


class StitchModel(nn.Module):
    """A YOLOv5-schema model. ``forward`` returns ``{task: head output}`` (e.g. ``{"det": ...}``).

    The input is an image batch, or for a model with FeatureInput layers the feature maps: a dict by key
    (plus ``"image"`` when some layer also reads the image), or a list in FeatureInput order.
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
        self._feature_layers = [layer.index for layer in self.layers if isinstance(layer.module, FeatureInput)]
        for position, index in enumerate(self._feature_layers):
            self.model[index].position = position
        self.uses_image = any(MODEL_INPUT in layer.sources for layer in self.layers
                              if not isinstance(layer.module, FeatureInput))
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
        """Strides of the first detection head's levels (stock ``model.stride``), else of the last layer with a
        feature map (1, the image's, when every layer is a head reading the image)."""
        for index in self.heads.values():
            if hasattr(self.model[index], "stride"):
                return self.model[index].stride
        maps = [layer.shape for layer in self.layers if layer.shape is not None]
        return torch.tensor([float(maps[-1].stride if maps else 1)])

    def parts(self) -> dict[str, list[int]]:
        """Layer indices per part: ``backbone`` (the backbone rows), ``neck`` (other head rows), and one entry
        per task head (``det``, ...). Optimiser groups, freezing and training stages work on these."""
        n_backbone = len(self.yaml["backbone"])
        heads = set(self.heads.values())
        parts = {"backbone": list(range(n_backbone)),
                 "neck": [i for i in range(n_backbone, len(self.layers)) if i not in heads]}
        parts.update({task: [index] for task, index in self.heads.items()})
        return parts

    @property
    def feature_inputs(self) -> list[FeatureInput]:
        """The FeatureInput layers, in model order (the order of list inputs and of exported inputs)."""
        return [self.model[i] for i in self._feature_layers]

    def feature_contract(self) -> dict[str, Shape]:
        """``{key: Shape}`` of the external maps this model takes (empty: images only)."""
        return {str(m.key): m.contract() for m in self.feature_inputs}

    def example_input(self, height: int, width: int | None = None) -> ModelInput:
        """Zeros shaped like a real input for an ``height`` x ``width`` image (profiling, export, tracing)."""
        width = width or height
        p = next(self.parameters())
        image = torch.zeros((1, int(self.yaml.get("ch", 3)), height, width), device=p.device, dtype=p.dtype)
        if not self._feature_layers:
            return image
        maps = {str(m.key): torch.zeros((1, m.c_in, math.ceil(height / m.s_in), math.ceil(width / m.s_in)),
                                        device=p.device, dtype=p.dtype) for m in self.feature_inputs}
        return {**maps, "image": image} if self.uses_image else maps

    def forward(self, x: ModelInput) -> dict[str, Any]:
        image, features = self._split_input(x)
        outputs = self._run(image, features, len(self.layers), self._keep)
        if not self.heads:  # a backbone-only model returns its last feature map
            return {"features": outputs[-1]}
        return {task: outputs[index] for task, index in self.heads.items()}

    def forward_layers(self, x: ModelInput, keep: set[int]) -> dict[int, torch.Tensor]:
        """Outputs of the layers in ``keep``, running the model only as far as the last of them."""
        image, features = self._split_input(x)
        outputs = self._run(image, features, max(keep) + 1, self._keep | keep)
        return {i: outputs[i] for i in keep}

    def _run(self, image: torch.Tensor | None, features: dict[int, torch.Tensor], stop: int, keep: set[int]) -> list:
        """Layers [0, stop): FeatureInputs take their map, the rest their sources; outputs kept where needed."""
        outputs: list[Any] = []
        for layer in self.layers[:stop]:
            if layer.index in features:
                y = layer.module(features[layer.index])
            else:
                inputs = [image if s == MODEL_INPUT else outputs[s] for s in layer.sources]
                y = layer.module(inputs[0] if layer.single else inputs)
            outputs.append(y if layer.index in keep or layer.index == stop - 1 else None)
        return outputs

    def _split_input(self, x: ModelInput) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """(image, {FeatureInput layer index: its checked tensor}) from whichever input form was given."""
        if not self._feature_layers:
            image = x["image"] if isinstance(x, Mapping) else x
            return image, {}
        if isinstance(x, torch.Tensor):
            image, given = (x, None) if self.uses_image else (None, [x])
        elif isinstance(x, Mapping):
            image, given = x.get("image"), x
        elif isinstance(x, (list, tuple)):
            image, given = None, x
        else:
            raise FeatureContractError(f"the model takes feature maps (a dict by key or a list), got "
                                       f"{type(x).__name__}")
        if self.uses_image and image is None:
            first = next(layer for layer in self.layers if MODEL_INPUT in layer.sources
                         and not isinstance(layer.module, FeatureInput))
            raise FeatureContractError(f"layer {first.index} ({first.module_name}) reads the image: pass "
                                       "{'image': images, <feature key>: tensor, ...}")
        if given is None:
            raise FeatureContractError(f"the model's FeatureInput layers need feature maps "
                                       f"{list(self.feature_contract())}, got only an image")
        modules = self.feature_inputs
        tensors = [m.select(given) for m in modules]
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            for m, t in zip(modules, tensors):
                m.check(t)
            check_feature_sizes(modules, tensors, tuple(image.shape[2:]) if image is not None else None)
        return image, dict(zip(self._feature_layers, tensors))

    def info(self, imgsz: int = 640, verbose: bool = True) -> dict[str, Any]:
        """Log the layer table and a stock-style summary line (the CLI shows them); return the figures."""
        from .summary import model_summary

        return model_summary(self, imgsz=imgsz, verbose=verbose)


def build_model(cfg: str | Path | dict[str, Any], nc: int | None = None, ch: int | None = None,
                kpt_shape: list[int] | None = None,
                features: Mapping[str, Shape] | None = None) -> StitchModel:
    """Build a model from a YAML path, a built-in model name (``yolov5s.yaml``) or a config dict.

    ``nc``, ``ch`` and ``kpt_shape`` override the config's class count, input channels and keypoint shape
    (``kpt_shape`` only where the config uses keypoints). ``features`` (``{key: Shape}``, a
    cache's or extractor's contract) fits the FeatureInput rows to the maps it describes; what changed is
    logged.
    """
    config, source = load_model_config(cfg)
    if features is not None:
        config, notes = apply_feature_contract(config, features)
        for note in notes:
            logger.info("%s: %s", source, note)
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
