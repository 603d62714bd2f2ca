"""An exported ``.onnx`` / ``.torchscript`` file seen as a StitchModel in eval mode, for val.py and detect.py.

:class:`ExportedModel` has what the validator and the detector read from a model (``names``, ``nc``,
``stride``, ``heads``, ``kpt_shape``, the feature-input contract, the checkpoint's feature record) and
``model(x)`` returns the same decoded ``{task: output}`` dict as a StitchModel in eval mode, so NMS,
metrics and drawing run unchanged.

Shapes, as stock YOLOv5's multi-backend runner handles them: a graph exported with dynamic axes (ONNX
``--dynamic``; TorchScript traces checked at export to run other sizes) takes any batch and image size, so
val.py feeds it the .pt's rectangular batches and gets the .pt's numbers. A fixed-shape graph takes its
export size only: val.py letterboxes square at that size (stock's "square inference for non-PyTorch
models"), batches are cut into the graph's batch size (the last one padded), and a smaller image (detect.py's
stride-multiple letterbox) is padded bottom-right with the letterbox grey, so boxes keep their coordinates.

Precision: onnxruntime runs the fp32 graph whatever ``--amp`` says (said once, and in the run's precision
line); a TorchScript graph runs under the caller's autocast as the .pt does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.precision import Precision
from ..errors import FlagError
from ..heads.outputs import MaskRows
from ..models.shape import Shape
from ..ops.letterbox import PAD_VALUE as LETTERBOX_GREY
from ..tasks import tasks_of
from .sessions import open_runner
from .wrapper import IMAGE_INPUT

LOGGER = logging.getLogger(__name__)

EXPORTED_SUFFIXES = (".onnx", ".torchscript")
PAD_VALUE = LETTERBOX_GREY / 255  # on 0..1 images
ONNX_PRECISION = "ONNX Runtime runs the exported fp32 graph; --amp applies to .pt and .torchscript"
HALF_PRECISION = "written by export --half: fp16 weights and inputs"


def is_exported(weights: Any) -> bool:
    """Whether ``weights`` names a file written by export.py (by suffix; the file is checked on loading)."""
    return isinstance(weights, (str, Path)) and Path(weights).suffix.lower() in EXPORTED_SUFFIXES


def load_exported(path: str | Path, device: torch.device, precision: Precision | None = None, dnn: bool = False
                  ) -> tuple[ExportedModel, Precision]:
    """(the model, the precision it will really run in). ONNX: fp32, said once if ``--amp`` asked for more.
    ``dnn``: an .onnx file runs in OpenCV DNN instead of onnxruntime (stock's ``--dnn``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    model = ExportedModel(path, device, dnn)
    precision = precision or Precision(torch.device(device).type)
    if model.half:  # its weights and inputs are fp16 already: autocast has nothing to add
        if precision.enabled:
            LOGGER.warning("%s runs as its fp16 graph (export --half): --amp applies to fp32 .pt and exports",
                           path.name)
        precision = Precision(precision.device_type, reason=HALF_PRECISION, base="fp16 graph")
    elif model.format == "onnx":
        engine = "OpenCV DNN" if dnn else "ONNX Runtime"
        if precision.enabled:
            LOGGER.warning("%s runs in fp32: %s runs the exported fp32 graph (--amp would have given "
                           "%s; it applies to .pt and .torchscript)", path.name, engine, precision.describe())
        precision = Precision(precision.device_type, reason=ONNX_PRECISION.replace("ONNX Runtime", engine))
    if not model.dynamic:
        h, w = model.imgsz
        LOGGER.info("%s has a fixed input shape (%d, 3, %d, %d): images letterboxed into it, batches of %d, as "
                    "stock does for exported models (export with --dynamic to run rect batches as the .pt)",
                    path.name, model.batch_size, h, w, model.batch_size)
    return model, precision


@dataclass(frozen=True)
class FeatureSlot:
    """One feature-map input, as :func:`..engine.features.check_contract` reads a FeatureInput layer."""

    key: str
    name: str
    c_in: int
    s_in: int

    def contract(self) -> Shape:
        return Shape(self.c_in, self.s_in)


@dataclass(frozen=True)
class HeadInfo:
    """What a task reads from its head module (``tasks.base.head_module``) when validating or detecting."""

    task: str
    nc: int | None = None
    nl: int | None = None


class ExportedModel(nn.Module):
    """A file written by export.py, called like a StitchModel in eval mode (decoded outputs per task)."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", dnn: bool = False):
        super().__init__()
        self.path = Path(path)
        self.runner = open_runner(self.path, torch.device(device), dnn)
        if hasattr(self.runner, "module"):
            self.graph = self.runner.module  # a submodule, so .to() and .eval() reach it
        meta = self.meta = self.runner.metadata
        self.format: str = self.runner.format
        self.names: dict[int, str] = {int(k): str(v) for k, v in meta["names"].items()}
        self.yaml = {"nc": meta.get("nc", len(self.names)), "kpt_shape": meta.get("kpt_shape"),
                     "skeleton": meta.get("skeleton")}
        self.skeleton = meta.get("skeleton")
        self.imgsz: tuple[int, int] = (int(meta["imgsz"][0]), int(meta["imgsz"][1]))
        self.batch_size = int(meta.get("batch_size", 1))
        self.dynamic = bool(meta.get("dynamic", False))
        self.half = bool(meta.get("half", False))  # fp16 graph: inputs go in as fp16, outputs come back fp32
        self.tasks: dict[str, list[str]] = {str(t): list(n) for t, n in meta["tasks"].items()}
        self.heads = {task: i for i, task in enumerate(self.tasks)}
        # head stand-ins for the tasks (a keypoint task reads kpt_shape from this model when its head has none)
        self.model = [HeadInfo(task, self.yaml["nc"], len(meta["stride"])) for task in self.tasks]
        contract = meta.get("feature_contract") or {}
        feature_names = meta["inputs"][len(meta["inputs"]) - len(contract):] if contract else []
        self.feature_inputs = [FeatureSlot(str(key), f"input {name!r} of {self.path.name}", int(c["channels"]),
                                           int(c["stride"]))
                               for (key, c), name in zip(contract.items(), feature_names)]
        self.uses_image = bool(meta.get("uses_image", not contract))
        self.checkpoint = {"path": str(self.path), "kind": f"exported {self.format}",
                           "features": meta.get("features") or {}}
        self.register_buffer("_stride", torch.tensor([float(s) for s in meta["stride"]]), persistent=False)
        self._task_list = tasks_of(self, every_head=True)  # turn the graph's tensors into each task's eval output
        super().train(False)

    # --- what the validator and detector read -------------------------------------------------------

    @property
    def nc(self) -> int | None:
        return self.yaml["nc"]

    @property
    def kpt_shape(self) -> list[int] | None:
        return self.yaml["kpt_shape"]

    @property
    def stride(self) -> torch.Tensor:
        return self._stride

    @property
    def fixed_shape(self) -> bool:
        """Whether the graph takes only its export size (then val.py letterboxes square, as stock)."""
        return not self.dynamic

    def feature_contract(self) -> dict[str, Shape]:
        return {slot.key: slot.contract() for slot in self.feature_inputs}

    def train(self, mode: bool = True) -> ExportedModel:
        """Always eval: an exported graph only runs inference."""
        return super().train(False)

    # --- inference ------------------------------------------------------------------------------------

    def forward(self, x: Any) -> dict[str, Any]:
        tensors = self._positional(x)
        size = tuple(tensors[0].shape[2:]) if self.uses_image else None
        if not self.dynamic:
            tensors = self._fit(tensors)
        outputs = dict(zip(self.meta["outputs"], self._run(tensors)))
        device = tensors[0].device
        result = {task.key: task.eval_output([outputs[n].to(device) for n in self.tasks[task.key]])
                  for task in self._task_list}
        if size is not None and not self.dynamic:
            result = {key: self._crop_protos(out, size) for key, out in result.items()}
        return result

    def _positional(self, x: Any) -> list[torch.Tensor]:
        """The graph's inputs in order from an image batch, ``{key: map, "image": batch}`` or a sequence."""
        names = self.meta["inputs"]
        if isinstance(x, torch.Tensor):
            x = [x]
        if isinstance(x, Mapping):
            keyed = {str(k): v for k, v in x.items()}
            wanted = ([("image", IMAGE_INPUT)] if self.uses_image else []) + [(s.key, s.key)
                                                                              for s in self.feature_inputs]
            missing = [key for key, _ in wanted if key not in keyed]
            if missing:
                raise FlagError(f"{self.path}: inputs {missing} missing (given {sorted(keyed)})")
            x = [keyed[key] for key, _ in wanted]
        x = list(x)
        if len(x) != len(names):
            raise FlagError(f"{self.path}: takes {len(names)} inputs {names}, got {len(x)}")
        return [t.float() for t in x]

    def _fit(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Inputs of a fixed-shape graph: images padded bottom-right to the export size, maps checked."""
        h, w = self.imgsz
        offset = 1 if self.uses_image else 0
        out = []
        if self.uses_image:
            image = tensors[0]
            ih, iw = image.shape[2:]
            if ih > h or iw > w:
                size = f"{h}" if h == w else f"{h} {w} (detect.py; val.py takes one size: {min(h, w)})"
                raise FlagError(f"{self.path} was exported for {h}x{w} images (fixed shape), got {ih}x{iw}: run "
                                f"with --imgsz {size}, or export with --dynamic")
            out.append(F.pad(image, (0, w - iw, 0, h - ih), value=PAD_VALUE) if (ih, iw) != (h, w) else image)
        for slot, t in zip(self.feature_inputs, tensors[offset:]):
            want = (slot.c_in, math.ceil(h / slot.s_in), math.ceil(w / slot.s_in))
            if tuple(t.shape[1:]) != want:
                raise FlagError(f"{self.path}: feature map {slot.key!r} is {tuple(t.shape[1:])}, the fixed-shape "
                                f"graph takes {want} ({h}x{w} images): use a feature cache made at --imgsz "
                                f"{max(h, w)}, or export with --dynamic")
            out.append(t)
        return out

    def _run(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The graph on the whole batch (dynamic), or on chunks of its batch size, the last padded with zeros."""
        n = tensors[0].shape[0]
        if self.dynamic or n == self.batch_size:
            return self.runner(tensors)
        b = self.batch_size
        parts: list[list[torch.Tensor]] = []
        for start in range(0, n, b):
            chunk = [t[start:start + b] for t in tensors]
            short = b - chunk[0].shape[0]
            if short:
                chunk = [torch.cat((t, t.new_zeros((short, *t.shape[1:])))) for t in chunk]
            outputs = self.runner(chunk)
            parts.append([o[:b - short] for o in outputs])
        return [torch.cat(column) for column in zip(*parts)]

    def _crop_protos(self, output: Any, size: Sequence[int]) -> Any:
        """Mask prototypes of a padded image cropped back to the image the caller gave (their stride divides the
        letterbox's), so masks assembled at that size line up; other outputs as they are."""
        if not isinstance(output, MaskRows):
            return output
        h, w = self.imgsz
        ph, pw = output.protos.shape[2:]
        return output._replace(protos=output.protos[:, :, :round(size[0] * ph / h), :round(size[1] * pw / w)])
