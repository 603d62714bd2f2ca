"""Read stock YOLOv5 ``.pt`` files (whole pickled models) without running any of their code (running stock
YOLOv5 itself, for compare, is :mod:`yolostitch.run_stock`).

Stock checkpoints pickle a whole ``models.yolo.Model``. We unpickle them with torch's own restricted
``weights_only`` unpickler, in which the only classes that exist are inert stand-ins registered under the
stock names: they record their pickled state and do nothing else. Any other global in the file (``os.system``,
an unknown class) makes loading fail before it can be called. Weights, config, names and stride are then read
off the stand-ins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError

# classes stock YOLOv5 checkpoints pickle (v5.0 .. v7.0, repo layout and the `yolov5` pip package)
_STOCK_CLASSES = {
    "models.yolo": ["Model", "DetectionModel", "SegmentationModel", "ClassificationModel", "Detect", "Segment"],
    "models.common": ["Conv", "DWConv", "Bottleneck", "BottleneckCSP", "C3", "C3x", "C3TR", "C3SPP", "C3Ghost",
                      "SPP", "SPPF", "Focus", "GhostConv", "GhostBottleneck", "Concat", "Contract", "Expand",
                      "Proto", "Classify", "TransformerLayer", "TransformerBlock", "CrossConv"],
    "models.experimental": ["CrossConv", "Sum", "MixConv2d", "Ensemble"],
    "torch.nn.modules.activation": ["SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Sigmoid", "Identity",
                                    "MultiheadAttention"],
    "torch.nn.modules.batchnorm": ["BatchNorm2d"],
    "torch.nn.modules.container": ["Sequential", "ModuleList"],
    "torch.nn.modules.conv": ["Conv2d", "ConvTranspose2d"],
    "torch.nn.modules.linear": ["Linear", "Identity", "NonDynamicallyQuantizableLinear"],
    "torch.nn.modules.pooling": ["MaxPool2d", "AdaptiveAvgPool2d"],
    "torch.nn.modules.upsampling": ["Upsample"],
    "torch.nn.modules.dropout": ["Dropout"],
    "torch.nn.modules.flatten": ["Flatten"],
}


class StockObject:
    """Inert stand-in for a pickled stock class: keeps the pickled state as attributes, runs nothing."""

    stock_name = "?"

    def __setstate__(self, state: Any) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})

    def __repr__(self) -> str:
        return f"<stock {self.stock_name}>"


def _stand_ins() -> list[Any]:
    allowed: list[Any] = [set]
    for module, names in _STOCK_CLASSES.items():
        prefixes = [module, f"yolov5.{module}"] if module.startswith("models.") else [module]
        for prefix in prefixes:
            for name in names:
                qualified = f"{prefix}.{name}"
                allowed.append((type(name, (StockObject,), {"stock_name": qualified}), qualified))
    allowed.append((_method_reference, "builtins.getattr"))
    return allowed


def _method_reference(owner: Any, name: Any) -> str:
    """Stands in for ``getattr`` while unpickling. Stock YOLOv5-seg's ``Segment`` keeps ``Detect.forward`` as an
    attribute, which pickle stores as ``getattr(Detect, "forward")``. Only that form is accepted (a stand-in
    class and a public name), and it gives back an inert label, never a real attribute."""
    if not (isinstance(owner, type) and issubclass(owner, StockObject) and isinstance(name, str)
            and name.isidentifier() and not name.startswith("_")):
        raise WeightsError(f"refused getattr({owner!r}, {name!r}): only references to methods of the stock "
                           "YOLOv5 model classes are read")
    return f"<stock {owner.stock_name}.{name}>"


@dataclass
class StockCheckpoint:
    config: dict[str, Any]  # the stock model's `yaml` dict
    state_dict: dict[str, torch.Tensor]  # float32, stock key names
    names: dict[int, str]
    stride: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, date, ... as saved


def load_pickle_safely(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` in which stock YOLOv5 classes unpickle to inert stand-ins."""
    with torch.serialization.safe_globals(_stand_ins()):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            detail = describe_load_error(e)
            if "GLOBAL" in detail:
                raise WeightsError(
                    f"{path}: refused to load: it references code outside the stock YOLOv5 model classes and "
                    f"tensors, which could run on loading ({detail})") from None
            raise WeightsError(f"{path}: not a readable checkpoint ({detail})") from None


# sentences of torch's weights_only errors that advise loading the file unsafely (or allow-listing its classes)
_UNSAFE_ADVICE = ("weights only load failed", "re-running", "weights_only", "arbitrary code",
                  "trusted source", "trust the source", "safe_globals", "allowlist", "please file an issue",
                  "check the documentation", "this file can still be loaded", "alternatively, to load",
                  "changed the default value")


def describe_load_error(error: BaseException) -> str:
    """What went wrong in a ``torch.load(weights_only=True)``, in one line, without torch's advice to load the
    file with ``weights_only=False`` (which would run any code in it) or to allow-list its classes."""
    if isinstance(error, EOFError):
        return "the file is empty or cut short"
    text = str(error).replace("WeightsUnpickler error:", "\n").replace("\x1b[1m", "").replace("\x1b[0m", "")
    sentences = [s.strip() for s in re.split(r"(?<=[.:])\s+|\n+|\t+", text) if s.strip()]
    keep = [s for s in sentences
            if not any(advice in s.lower() for advice in _UNSAFE_ADVICE) and not re.fullmatch(r"\(\d\)", s)]
    detail = " ".join(keep).strip(" :")
    return detail if detail else type(error).__name__


def is_stock_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("ema") or obj.get("model"), StockObject)


def read_stock_checkpoint(obj: dict[str, Any], path: str | Path = "<checkpoint>") -> StockCheckpoint:
    """Extract weights and metadata from an unpickled stock checkpoint (EMA weights when present)."""
    model = obj.get("ema") or obj.get("model")
    config = getattr(model, "yaml", None)
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: stock model has no 'yaml' config dict; cannot rebuild its architecture")
    state = {k: v.float() for k, v in module_state_dict(model).items()}
    names = getattr(model, "names", None) or [f"class{i}" for i in range(int(config.get("nc", 0)))]
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): v for k, v in names.items()}
    stride = getattr(model, "stride", torch.tensor([8.0, 16.0, 32.0]))
    meta = {k: v for k, v in obj.items() if k not in ("model", "ema", "optimizer") and _plain(v)}
    return StockCheckpoint(dict(config), state, names, torch.as_tensor(stride).float(), meta)


def module_state_dict(node: StockObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict ``nn.Module.state_dict()`` would give, read off a tree of stand-ins."""
    state: dict[str, torch.Tensor] = {}
    skip = getattr(node, "_non_persistent_buffers_set", set())
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (getattr(node, kind, None) or {}).items():
            if tensor is not None and name not in skip:
                state[prefix + name] = tensor.detach()
    for name, child in (getattr(node, "_modules", None) or {}).items():
        if child is not None:
            state.update(module_state_dict(child, f"{prefix}{name}."))
    return state


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))
