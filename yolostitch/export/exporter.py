"""ONNX and TorchScript export of a StitchModel, each verified against PyTorch before it is handed out.

ONNX goes through the TorchScript-based (legacy, ``dynamo=False``) exporter: it traces this model family
(dict outputs flattened by :class:`ExportModule`, cached grids rebuilt while tracing) reliably and fast,
where the torch.export-based one needs more of the model to be export-friendly. Every file is run once in
its runtime and compared with the PyTorch outputs; a difference over ``tolerance`` is an error.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..models import StitchModel
from ..errors import FlagError
from ._deps import quiet, require_onnx
from .wrapper import ExportModule, Inputs, max_relative_diff

TOLERANCE = 1e-4  # max |onnx - torch| / max(1, |torch|) accepted; float32 graphs differ by ~1e-6
FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}


@dataclass
class ExportResult:
    """One written file and how well it matches PyTorch (or, for int8, the fp32 ONNX model)."""

    format: str  # "onnx", "torchscript" or "onnx-int8"
    path: Path
    max_diff: float
    latency_ms: float | None = None  # int8 only: median CPU latency of this file ...
    reference_latency_ms: float | None = None  # ... and of the fp32 model it came from
    size_ratio: float | None = None  # int8 only: size / fp32 size
    note: str = ""

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6

    def line(self) -> str:
        """The CLI's one line for this file."""
        text = f"{self.format}: {self.path} ({self.size_mb:.1f} MB), max diff {self.max_diff:.2e}"
        if self.size_ratio is not None:
            text += f" vs fp32, size x{self.size_ratio:.2f}"
        if self.latency_ms is not None and self.reference_latency_ms is not None:
            text += (f", CPU latency {self.latency_ms:.1f} ms vs {self.reference_latency_ms:.1f} ms fp32 "
                     f"(x{self.latency_ms / self.reference_latency_ms:.2f})")
        return text + (f" [{self.note}]" if self.note else "")


def export_onnx(model: StitchModel | ExportModule, path: str | Path, imgsz: int | Sequence[int],
                batch_size: int = 1, dynamic: bool = False, opset: int = 17,
                tolerance: float = TOLERANCE) -> Path:
    """Write ``model`` as ONNX (inputs/outputs named as :class:`ExportModule` names them, metadata as JSON
    strings in ``metadata_props``), check it with ``onnx.checker``, verify it in onnxruntime; return the path."""
    return onnx_result(model, path, imgsz, batch_size, dynamic, opset, tolerance).path


def onnx_result(model: StitchModel | ExportModule, path: str | Path, imgsz: int | Sequence[int],
                batch_size: int = 1, dynamic: bool = False, opset: int = 17,
                tolerance: float = TOLERANCE) -> ExportResult:
    """:func:`export_onnx`, returning the measured difference too."""
    onnx, _ = require_onnx()
    low, high = opset_range()
    if not low <= opset <= high:  # checked here: the exporter's own error comes after a dump of the whole graph
        raise FlagError(f"opset {opset} is not supported by this torch's ONNX exporter (use {low}-{high})")
    module = _wrap(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = module.example_inputs(imgsz, batch_size)
    axes = dynamic_axes(module, inputs) if dynamic else None
    exporter, note = _torch_onnx_export(module, inputs, path, opset, axes)
    proto = onnx.load(str(path))
    for key, value in {**module.metadata(imgsz, batch_size, dynamic), "exporter": exporter}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))

    diff = verify_onnx(module, path, inputs)
    if dynamic:  # the point of dynamic axes: check another batch and image size than the traced ones
        diff = max(diff, verify_onnx(module, path, other_inputs(module, imgsz, batch_size)))
    _accept(path, "ONNX", diff, tolerance)
    return ExportResult("onnx", path, diff, note=note)


def dynamic_axes(module: ExportModule, inputs: Sequence[torch.Tensor]) -> dict[str, dict[int, str]]:
    """Batch, height and width of every input dynamic (as stock's ``--dynamic``), and the output axes that
    follow them, told by each output's rank on ``inputs`` (no task named): a map (batch, c, h, w) such as mask
    prototypes, per-anchor rows (batch, rows, values), or one vector per image (batch, values)."""
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
                                       for name in module.input_names}
    with torch.no_grad():
        outputs = module(*inputs)
    for name, out in zip(module.output_names, outputs):
        axes[name] = ({0: "batch", 2: f"{name}_height", 3: f"{name}_width"} if out.dim() == 4 else
                      {0: "batch", 1: f"{name}_rows"} if out.dim() == 3 else {0: "batch"})
    return axes


def other_inputs(module: ExportModule, imgsz: int | Sequence[int], batch_size: int) -> tuple[torch.Tensor, ...]:
    """Inputs of another batch size and image size than the traced ones (one more, one largest stride taller):
    what a graph claiming dynamic shapes is checked on."""
    h, w = module.image_size(imgsz)
    return module.example_inputs((h + module.max_stride, w), batch_size + 1, seed=1)


def _torch_onnx_export(module: ExportModule, inputs: tuple[torch.Tensor, ...], path: Path, opset: int,
                       axes: dict[str, dict[int, str]] | None) -> tuple[str, str]:
    """Export with the TorchScript-based exporter (about 10x faster here than the torch.export-based one,
    and exact); only if it fails, as it may once torch drops it, with the torch.export-based one.
    Returns (exporter used, a note for the user if it was the fallback)."""
    kwargs: dict[str, Any] = dict(opset_version=opset, input_names=module.input_names,
                                  output_names=module.output_names)
    parameters = inspect.signature(torch.onnx.export).parameters
    if "dynamo" not in parameters:  # older torch: there is only one
        with torch.no_grad(), quiet():
            torch.onnx.export(module, inputs, str(path), do_constant_folding=True, dynamic_axes=axes, **kwargs)
        return "torch.onnx (TorchScript-based)", ""
    try:
        with torch.no_grad(), quiet():
            torch.onnx.export(module, inputs, str(path), dynamo=False, do_constant_folding=True, dynamic_axes=axes,
                              **kwargs)
        return "torch.onnx (TorchScript-based)", ""
    except Exception as legacy:  # noqa: BLE001  (any failure: the other exporter may still succeed)
        try:
            extra: dict[str, Any] = {"external_data": False} if "external_data" in parameters else {}
            if axes:  # forward(*inputs): torch.export wants the batch dimension per element of ``inputs``
                batch = getattr(torch.export.Dim, "DYNAMIC", None) or torch.export.Dim("batch")
                extra["dynamic_shapes"] = {"inputs": tuple({0: batch} for _ in inputs)}
            with torch.no_grad(), quiet():
                torch.onnx.export(module, inputs, str(path), dynamo=True, **extra, **kwargs)
        except Exception:  # noqa: BLE001
            raise legacy from None  # the first exporter's error is the one to report
        first_line = str(legacy).strip().splitlines()[0] if str(legacy).strip() else type(legacy).__name__
        return "torch.onnx (torch.export-based)", f"TorchScript-based exporter failed: {first_line}"


def opset_range() -> tuple[int, int]:
    """The opsets the TorchScript-based exporter writes, from its base opset 9 to its maximum."""
    try:
        from torch.onnx import _constants
        high = int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):
        high = 17
    return 9, high


def verify_onnx(model: StitchModel | ExportModule, path: str | Path, inputs: Inputs) -> float:
    """Run ``path`` in onnxruntime (CPU) and ``model`` in PyTorch on ``inputs``; the largest difference over
    all outputs, ``|a - b| / max(1, |a|)`` (decoded boxes are in pixels, probabilities in [0, 1])."""
    _, ort = require_onnx()
    module = _wrap(model)
    inputs = module.as_positional(inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check_names(path, [i.name for i in session.get_inputs()], module.input_names, "inputs")
    _check_names(path, [o.name for o in session.get_outputs()], module.output_names, "outputs")
    outputs = session.run(module.output_names,
                          {name: t.detach().cpu().numpy() for name, t in zip(module.input_names, inputs)})
    with torch.no_grad():
        reference = module(*inputs)
    return max_relative_diff(reference, outputs, module.output_names)


def export_torchscript(model: StitchModel | ExportModule, path: str | Path, imgsz: int | Sequence[int],
                       batch_size: int = 1, tolerance: float = TOLERANCE) -> Path:
    """Trace ``model`` with ``torch.jit.trace`` and save it with the same metadata as the ONNX export in
    ``config.json`` (``_extra_files``); reload and verify it; return the path."""
    return torchscript_result(model, path, imgsz, batch_size, tolerance).path


def torchscript_result(model: StitchModel | ExportModule, path: str | Path, imgsz: int | Sequence[int],
                       batch_size: int = 1, tolerance: float = TOLERANCE) -> ExportResult:
    """:func:`export_torchscript`, returning the measured difference too."""
    module = _wrap(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = module.example_inputs(imgsz, batch_size)
    with torch.no_grad(), quiet():
        traced = torch.jit.trace(module, inputs, check_trace=False)
        dynamic = _runs_other_shapes(traced, module, imgsz, batch_size, tolerance)
        torch.jit.save(traced, str(path),
                       _extra_files={"config.json": json.dumps(module.metadata(imgsz, batch_size, dynamic))})
    diff = verify_torchscript(module, path, inputs)
    _accept(path, "TorchScript", diff, tolerance)
    return ExportResult("torchscript", path, diff)


def _runs_other_shapes(traced: torch.jit.ScriptModule, module: ExportModule, imgsz: int | Sequence[int],
                       batch_size: int, tolerance: float) -> bool:
    """Whether the trace reproduces the model at another batch and image size (this family's traces do: sizes
    are traced, grids rebuilt from them); recorded as ``dynamic`` so runtimes know they may feed any shape."""
    inputs = other_inputs(module, imgsz, batch_size)
    try:
        with torch.no_grad():
            outputs = traced(*inputs)
            diff = max_relative_diff(module(*inputs), outputs if isinstance(outputs, (tuple, list)) else (outputs,))
    except RuntimeError:  # a shape baked into the trace
        return False
    return diff <= tolerance


def verify_torchscript(model: StitchModel | ExportModule, path: str | Path, inputs: Inputs) -> float:
    """Reload ``path`` (metadata included) and compare its outputs with ``model``'s, as :func:`verify_onnx`."""
    module = _wrap(model)
    inputs = module.as_positional(inputs)
    extra = {"config.json": ""}
    with quiet():
        loaded = torch.jit.load(str(path), map_location=inputs[0].device, _extra_files=extra)
    meta = json.loads(extra["config.json"] or "null")
    if not isinstance(meta, dict) or meta.get("outputs") != module.output_names:
        raise RuntimeError(f"{path}: config.json is missing or names other outputs than {module.output_names}")
    with torch.no_grad():
        outputs = loaded(*inputs)
        reference = module(*inputs)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return max_relative_diff(reference, outputs, module.output_names)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata written by :func:`export_onnx` (``.onnx``) or :func:`export_torchscript`, decoded."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx, _ = require_onnx()
        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: json.loads(p.value) for p in proto.metadata_props}
    extra = {"config.json": ""}
    with quiet():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["config.json"] or "{}")


def export_weights(weights: str | Path, include: Sequence[str] = ("onnx",), imgsz: int | Sequence[int] = 640,
                   batch_size: int = 1, device: str = "cpu", dynamic: bool = False, opset: int = 17,
                   int8: bool = False) -> list[ExportResult]:
    """Export a weights file to each format in ``include``, next to it (``best.pt`` -> ``best.onnx``,
    ``best.torchscript``, ``best-int8.onnx``); ``int8`` quantises the ONNX file (and so implies ONNX)."""
    from ..engine.runs import select_device
    from ..weights import load_model
    from .quantize import int8_report, quantize_int8

    unknown = [f for f in include if f not in FORMATS]
    if unknown:
        raise FlagError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    formats = [f for f in FORMATS if f in include or (f == "onnx" and int8)]
    if "onnx" in formats:
        require_onnx()  # before the slow part
    model = load_model(weights, device=str(select_device(device)))
    module = ExportModule(model)
    module.image_size(imgsz)  # a bad size is a user error: say so before writing anything
    weights = Path(weights)
    results = []
    for fmt in formats:
        path = weights.with_suffix(SUFFIXES[fmt])
        if fmt == "onnx":
            results.append(onnx_result(module, path, imgsz, batch_size, dynamic, opset))
        else:
            results.append(torchscript_result(module, path, imgsz, batch_size))
    if int8:
        fp32 = weights.with_suffix(".onnx")
        int8_path = quantize_int8(fp32)
        report = int8_report(fp32, int8_path)
        results.append(ExportResult("onnx-int8", int8_path, report.max_diff, report.latency_int8_ms,
                                    report.latency_fp32_ms, report.size_ratio, report.scheme))
    return results


def _wrap(model: StitchModel | ExportModule) -> ExportModule:
    return model if isinstance(model, ExportModule) else ExportModule(model)


def _check_names(path: Path, found: list[str], expected: list[str], what: str) -> None:
    if found != expected:
        raise RuntimeError(f"{path}: {what} {found}, expected {expected} (exported from another model?)")


def _accept(path: Path, what: str, diff: float, tolerance: float) -> None:
    """Remove an export that does not reproduce the model: a wrong file next to the weights is worse than none."""
    if not diff <= tolerance:  # also catches NaN
        path.unlink(missing_ok=True)
        raise RuntimeError(f"{what} export does not match PyTorch: max difference {diff:.3g} > {tolerance:g} "
                           f"({path} removed)")
