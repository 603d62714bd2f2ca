"""ONNX and TorchScript export of a StitchModel, each verified against PyTorch before it is handed out.

ONNX goes through the TorchScript-based (legacy, ``dynamo=False``) exporter: it traces this model family
(dict outputs flattened by :class:`ExportModule`, cached grids rebuilt while tracing) reliably and fast,
where the torch.export-based one needs more of the model to be export-friendly. Every file is run once in
its runtime and compared with the PyTorch outputs; a difference over ``tolerance`` is an error.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..models import StitchModel
from ..errors import FlagError
from ._deps import quiet, require_onnx, require_simplifier
from .wrapper import ExportModule, Inputs, max_relative_diff

LOGGER = logging.getLogger(__name__)
TOLERANCE = 1e-4  # max |onnx - torch| / max(1, |torch|) accepted; float32 graphs differ by ~1e-6
# --half: the fp16 file against the fp32 model it came from (fp16 keeps ~3 significant digits, and the error
# grows through the layers: yolov5n.pt at 640 on random images differs by 0.016 in onnxruntime, 0.005 in
# TorchScript; a wrong graph by far more)
HALF_TOLERANCE = 0.05
HALF_NOTE = "fp16, max diff against the fp32 model"
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
                tolerance: float | None = None, half: bool = False, simplify: bool = False) -> Path:
    """Write ``model`` as ONNX (inputs/outputs named as :class:`ExportModule` names them, metadata as JSON
    strings in ``metadata_props``), check it with ``onnx.checker``, verify it in onnxruntime; return the path.
    ``half``: fp16 weights and inputs (verified against the fp32 model); ``simplify``: the graph simplified
    (onnxslim, else onnxsim) before it is checked and verified."""
    return onnx_result(model, path, imgsz, batch_size, dynamic, opset, tolerance, half, simplify).path


def onnx_result(model: StitchModel | ExportModule, path: str | Path, imgsz: int | Sequence[int],
                batch_size: int = 1, dynamic: bool = False, opset: int = 17,
                tolerance: float | None = None, half: bool = False, simplify: bool = False) -> ExportResult:
    """:func:`export_onnx`, returning the measured difference too."""
    onnx, _ = require_onnx()
    simplifier = require_simplifier() if simplify else None
    low, high = opset_range()
    if not low <= opset <= high:  # checked here: the exporter's own error comes after a dump of the whole graph
        raise FlagError(f"opset {opset} is not supported by this torch's ONNX exporter (use {low}-{high})")
    reference = _wrap(model)
    module = _graph_module(reference, half)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = module.example_inputs(imgsz, batch_size)
    axes = dynamic_axes(module, inputs) if dynamic else None
    exporter, note = _torch_onnx_export(module, inputs, path, opset, axes)
    proto = onnx.load(str(path))
    if simplifier is not None:
        proto, simplified = _simplify(proto, *simplifier)
        note = "; ".join(n for n in (note, simplified) if n)
    for key, value in {**module.metadata(imgsz, batch_size, dynamic), "exporter": exporter}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))

    diff = verify_onnx(reference, path, inputs)
    if dynamic:  # the point of dynamic axes: check another batch and image size than the traced ones
        diff = max(diff, verify_onnx(reference, path, other_inputs(module, imgsz, batch_size)))
    _accept(path, "ONNX", diff, _tolerance(tolerance, half))
    return ExportResult("onnx", path, diff, note="; ".join(n for n in (HALF_NOTE if half else "", note) if n))


def _graph_module(module: ExportModule, half: bool) -> ExportModule:
    """What is traced: the model itself, or for ``half`` an fp16 copy (fp16 inputs then, as stock's --half)."""
    if not half:
        return module
    half_module = module.half_copy()
    try:
        with torch.no_grad():
            half_module(*half_module.example_inputs(module.max_stride))
    except RuntimeError as e:  # e.g. an older torch without fp16 kernels on this device
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FlagError(f"--half: this model does not run in fp16 on {next(module.parameters()).device} with this "
                        f"torch ({first}); export on a CUDA device (--device 0)") from None
    return half_module


def _tolerance(tolerance: float | None, half: bool) -> float:
    return tolerance if tolerance is not None else HALF_TOLERANCE if half else TOLERANCE


def _simplify(proto: Any, name: str, simplifier: Any) -> tuple[Any, str]:
    """The graph simplified by onnxslim or onnxsim, and a note of what was done. A simplifier that fails leaves
    the graph as exported, and says so (as stock), rather than failing the export."""
    nodes = len(proto.graph.node)
    try:
        with quiet(), contextlib.redirect_stdout(io.StringIO()):
            if name == "onnxslim":
                simplified = simplifier.slim(proto)
            else:
                simplified, ok = simplifier.simplify(proto)
                if not ok:
                    raise RuntimeError("its check of the simplified graph failed")
    except Exception as e:  # noqa: BLE001  (any failure of an optional step keeps the exported graph)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        LOGGER.warning("--simplify: %s failed (%s); the graph is kept as exported", name, first)
        return proto, f"{name} failed, not simplified"
    return simplified, f"simplified by {name}: {nodes} -> {len(simplified.graph.node)} nodes"


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
    all outputs, ``|a - b| / max(1, |a|)`` (decoded boxes are in pixels, probabilities in [0, 1]). Each side
    gets the inputs in its own float type (an fp16 file against the fp32 model, for ``--half``)."""
    _, ort = require_onnx()
    module = _wrap(model)
    inputs = module.as_positional(inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check_names(path, [i.name for i in session.get_inputs()], module.input_names, "inputs")
    _check_names(path, [o.name for o in session.get_outputs()], module.output_names, "outputs")
    types = [torch.float16 if i.type == "tensor(float16)" else torch.float32 for i in session.get_inputs()]
    outputs = session.run(module.output_names, {name: t.detach().cpu().to(dtype).numpy()
                                                for name, t, dtype in zip(module.input_names, inputs, types)})
    with torch.no_grad():
        reference = module(*(t.to(module.dtype) for t in inputs))
    return max_relative_diff(reference, outputs, module.output_names)


def export_torchscript(model: StitchModel | ExportModule, path: str | Path, imgsz: int | Sequence[int],
                       batch_size: int = 1, tolerance: float | None = None, half: bool = False) -> Path:
    """Trace ``model`` with ``torch.jit.trace`` and save it with the same metadata as the ONNX export in
    ``config.json`` (``_extra_files``); reload and verify it; return the path. ``half``: fp16, as ONNX's."""
    return torchscript_result(model, path, imgsz, batch_size, tolerance, half).path


def torchscript_result(model: StitchModel | ExportModule, path: str | Path, imgsz: int | Sequence[int],
                       batch_size: int = 1, tolerance: float | None = None, half: bool = False) -> ExportResult:
    """:func:`export_torchscript`, returning the measured difference too."""
    reference = _wrap(model)
    module = _graph_module(reference, half)
    tolerance = _tolerance(tolerance, half)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = module.example_inputs(imgsz, batch_size)
    with torch.no_grad(), quiet():
        traced = torch.jit.trace(module, inputs, check_trace=False)
        dynamic = _runs_other_shapes(traced, module, imgsz, batch_size, TOLERANCE)  # the trace against itself
        torch.jit.save(traced, str(path),
                       _extra_files={"config.json": json.dumps(module.metadata(imgsz, batch_size, dynamic))})
    diff = verify_torchscript(reference, path, inputs)
    _accept(path, "TorchScript", diff, tolerance)
    return ExportResult("torchscript", path, diff, note=HALF_NOTE if half else "")


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
    dtype = torch.float16 if meta.get("half") else torch.float32
    with torch.no_grad():
        outputs = loaded(*(t.to(dtype) for t in inputs))
        reference = module(*(t.to(module.dtype) for t in inputs))
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
                   int8: bool = False, half: bool = False, simplify: bool = False) -> list[ExportResult]:
    """Export a weights file to each format in ``include``, next to it (``best.pt`` -> ``best.onnx``,
    ``best.torchscript``, ``best-int8.onnx``); ``int8`` quantises the ONNX file (and so implies ONNX);
    ``half`` writes fp16 graphs (fp16 inputs); ``simplify`` simplifies the ONNX graph."""
    from ..engine.runs import select_device
    from ..weights import load_model
    from .quantize import int8_report, quantize_int8

    unknown = [f for f in include if f not in FORMATS]
    if unknown:
        raise FlagError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if half and int8:
        raise FlagError("--half and --int8: the int8 file is quantised from the fp32 ONNX graph; give one")
    formats = [f for f in FORMATS if f in include or (f == "onnx" and int8)]
    if simplify and "onnx" not in formats:
        raise FlagError(f"--simplify simplifies the ONNX graph; --include {' '.join(include)} writes none")
    if "onnx" in formats:
        require_onnx()  # before the slow part
        if simplify:
            require_simplifier()
    model = load_model(weights, device=str(select_device(device)))
    module = ExportModule(model)
    module.image_size(imgsz)  # a bad size is a user error: say so before writing anything
    weights = Path(weights)
    results = []
    for fmt in formats:
        path = weights.with_suffix(SUFFIXES[fmt])
        if fmt == "onnx":
            results.append(onnx_result(module, path, imgsz, batch_size, dynamic, opset, half=half,
                                       simplify=simplify))
        else:
            results.append(torchscript_result(module, path, imgsz, batch_size, half=half))
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
