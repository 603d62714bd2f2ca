"""``ExportModule``: a StitchModel seen as a tracer wants it, positional tensors in and a flat tuple out.

Exported graphs (ONNX, TorchScript) cannot take dicts or return ``{task: ...}``, so the wrapper fixes one
order and one name per input and per output; the names are what a runtime user sees, and they are recorded
in the exported file's metadata with everything else needed to use it (class names, strides, input sizes).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence, Union

import torch
from torch import nn

from ..models import StitchModel
from ..models.shape import contract_records
from ..tasks import TASKS, tasks_of
from ..errors import FlagError

FEATURES_OUTPUT = "features"  # a model without heads exports its last feature map under this name
IMAGE_INPUT = "images"

Inputs = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]


class ExportModule(nn.Module):
    """A StitchModel with positional tensor inputs (``input_names``) and a flat tuple of decoded outputs
    (``output_names``: each task's named outputs, e.g. ``det``, ``seg_coef``, ``seg_proto``, ``kpt``).

    The model is deep-copied, so putting its heads in export mode does not change the caller's model, and the
    wrapper stays in eval mode (an exporter restoring "the previous mode" must not switch BatchNorm to training).
    """

    def __init__(self, model: StitchModel):
        super().__init__()
        if not isinstance(model, StitchModel):
            raise TypeError(f"ExportModule wraps a StitchModel, got {type(model).__name__}")
        self.model = copy.deepcopy(model)
        for m in self.model.modules():
            if hasattr(m, "export"):
                m.export = True  # heads: decoded rows only, no raw maps
        super().train(False)

        features = self.model.feature_inputs
        self.feature_keys: list[str | int] = [m.key for m in features]
        names = [IMAGE_INPUT] if (not features or self.model.uses_image) else []
        names += [k if isinstance(k, str) else f"feature{k}" for k in self.feature_keys]
        if len(set(names)) != len(names):
            raise ValueError(f"the model's inputs {names} do not have distinct names")
        self.input_names: list[str] = names

        self.task_list = tasks_of(self.model, every_head=True)  # in registry order: outputs whatever the YAML's
        self.tasks: list[str] = [t.key for t in self.task_list] or [FEATURES_OUTPUT]
        self.task_outputs: dict[str, list[str]] = {t.key: t.export_names() for t in self.task_list}
        if not self.task_list:
            self.task_outputs[FEATURES_OUTPUT] = [FEATURES_OUTPUT]
        self.output_names: list[str] = [name for task in self.tasks for name in self.task_outputs[task]]

    def train(self, mode: bool = True) -> ExportModule:
        """Always eval: an export wrapper only ever runs inference."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' float type: float16 for ``export.py --half``, else float32; example inputs follow it."""
        return next((t.dtype for t in self.model.parameters() if t.is_floating_point()), torch.float32)

    def half_copy(self) -> ExportModule:
        """This wrapper with fp16 weights, buffers and decoding (stock's ``--half``: ``model.half()``)."""
        return copy.deepcopy(self).half()

    @property
    def max_stride(self) -> int:
        return int(self.model.stride.max())

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        if not self.feature_keys:
            x: Any = inputs[0]
        else:
            named = dict(zip(self.input_names, inputs))
            x = {key: t for key, t in zip(self.feature_keys, inputs[len(inputs) - len(self.feature_keys):])}
            if IMAGE_INPUT in named:
                x["image"] = named[IMAGE_INPUT]
        out = self.model(x)
        if not self.task_list:
            return (out[FEATURES_OUTPUT],)
        flat: list[torch.Tensor] = []
        for task in self.task_list:
            values = task.export_tensors(out[task.key])
            if len(values) != len(self.task_outputs[task.key]) or not all(isinstance(v, torch.Tensor) for v in values):
                raise RuntimeError(f"head {task.key!r} gave {_describe(values)} to export, expected tensors "
                                   f"{self.task_outputs[task.key]}")
            flat += values
        return tuple(flat)

    def image_size(self, imgsz: int | Sequence[int]) -> tuple[int, int]:
        """``imgsz`` as (h, w), checked against the model's largest stride (the neck concatenates levels)."""
        h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(int(v) for v in imgsz)
        s = self.max_stride
        if h < 1 or w < 1 or h % s or w % s:
            raise FlagError(f"image size {h}x{w} must be a positive multiple of the model's largest stride {s} "
                            f"(e.g. {max(s, math.ceil(max(h, w) / s) * s)})")
        return h, w

    def example_inputs(self, imgsz: int | Sequence[int], batch_size: int = 1,
                       seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs in ``input_names`` order (zeros would hide decoding errors): images in [0, 1),
        feature maps standard normal, shaped as the model's contract says for an ``imgsz`` image."""
        if batch_size < 1:
            raise FlagError(f"batch size must be at least 1, got {batch_size}")
        h, w = self.image_size(imgsz)
        example = self.model.example_input(h, w)
        tensors = _positional(self, example)
        g = torch.Generator().manual_seed(seed)
        out = []
        for name, t in zip(self.input_names, tensors):
            shape = (batch_size, *t.shape[1:])
            x = torch.rand(shape, generator=g) if name == IMAGE_INPUT else torch.randn(shape, generator=g)
            out.append(x.to(device=t.device, dtype=t.dtype))
        return tuple(out)

    def as_positional(self, inputs: Inputs) -> tuple[torch.Tensor, ...]:
        """Inputs in ``input_names`` order from a tensor, a sequence, or a mapping by input name (the model's
        own ``{"image": ..., key: ...}`` form works too)."""
        return _positional(self, inputs)

    def metadata(self, imgsz: int | Sequence[int], batch_size: int = 1, dynamic: bool = False) -> dict[str, Any]:
        """What a runtime needs besides the graph: names, strides, tasks and their outputs, input contract,
        where feature maps came from (``features``), and whether any batch and image size may be fed
        (``dynamic``)."""
        from .. import __version__

        model = self.model
        h, w = self.image_size(imgsz)
        strides = [int(s) for s in model.stride.tolist()]
        task_metadata = {k: v for cls in TASKS for k, v in cls.metadata_defaults().items()}
        for task in self.task_list:
            task_metadata.update(task.export_metadata())
        return {"producer": f"yolostitch {__version__}",
                "names": {int(k): str(v) for k, v in model.names.items()}, "nc": model.nc,
                "stride": strides, "max_stride": self.max_stride, "imgsz": [h, w], "batch_size": batch_size,
                "dynamic": bool(dynamic), "inputs": list(self.input_names), "outputs": list(self.output_names),
                "tasks": {task: list(names) for task, names in self.task_outputs.items()},
                **task_metadata, "feature_contract": contract_records(model.feature_contract()),
                "uses_image": IMAGE_INPUT in self.input_names, "features": _feature_record(model),
                "half": self.dtype == torch.float16,
                "skeleton": model.yaml.get("skeleton")}


def _feature_record(model: StitchModel) -> dict[str, Any]:
    """The checkpoint's record of where the maps came from (cache or extractor spec, weights hash), so that a
    runtime can rebuild a built-in extractor as ``val.py`` does for the .pt; plain JSON types only."""
    record = (getattr(model, "checkpoint", None) or {}).get("features") or {}
    return {str(k): v for k, v in record.items() if isinstance(v, (str, int, float, bool, dict, type(None)))}


def max_relative_diff(reference: Sequence[torch.Tensor], other: Sequence[Any],
                      names: Sequence[str] | None = None) -> float:
    """Largest ``|a - b| / max(1, |a|)`` over all outputs: absolute for small values, relative for decoded
    boxes in pixels. Shapes must agree (a wrong shape is an export bug, not a tolerance question)."""
    if len(reference) != len(other):
        raise RuntimeError(f"{len(other)} outputs, expected {len(reference)}")
    worst = 0.0
    for i, (a, b) in enumerate(zip(reference, other)):
        a = a.detach().float().cpu()
        b = torch.as_tensor(b).detach().float().cpu()
        if a.shape != b.shape:
            name = names[i] if names else i
            raise RuntimeError(f"output {name}: shape {tuple(b.shape)}, expected {tuple(a.shape)}")
        if a.numel():
            worst = max(worst, float(((a - b).abs() / a.abs().clamp(min=1.0)).max()))
    return worst


def _positional(module: ExportModule, inputs: Inputs) -> tuple[torch.Tensor, ...]:
    names = module.input_names
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(inputs, Mapping):
        keyed = {**inputs}
        if "image" in keyed and IMAGE_INPUT not in keyed:
            keyed[IMAGE_INPUT] = keyed.pop("image")
        for key, name in zip(module.feature_keys, names[len(names) - len(module.feature_keys):]):
            if key in keyed and name not in keyed:
                keyed[name] = keyed.pop(key)
        missing = [n for n in names if n not in keyed]
        if missing:
            raise ValueError(f"inputs {missing} missing (given {sorted(map(str, inputs))})")
        return tuple(keyed[n] for n in names)
    inputs = tuple(inputs)
    if len(inputs) != len(names):
        raise ValueError(f"expected {len(names)} inputs {names}, got {len(inputs)}")
    return inputs


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__
