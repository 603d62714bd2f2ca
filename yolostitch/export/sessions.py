"""Opening a file written by ``export.py`` for inference: its metadata (read as JSON, nothing else run) and
a runner that takes positional tensors and returns the graph's outputs as tensors.

ONNX files run in onnxruntime (on a CUDA ``--device`` with its CUDA provider when installed, else on the
CPU), or with ``--dnn`` in OpenCV's DNN module; the metadata comes from the model's ``metadata_props``.
TorchScript files run in PyTorch on the requested device; the metadata is read from the archive's
``extra/config.json`` with :mod:`zipfile` before anything is loaded, so a file not written by yolostitch is
refused before its graph is.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import FlagError, SetupError, WeightsError
from ._deps import quiet

RUNTIME_MISSING = "running an .onnx model needs onnxruntime: pip install yolostitch[export]"
REQUIRED_KEYS = ("names", "stride", "imgsz", "inputs", "outputs", "tasks")
NOT_OURS = ("has no yolostitch metadata ({what}): only files written by yolostitch's export.py can be "
            "validated or run (stock YOLOv5 exports carry other outputs); export the .pt with export.py")


def onnx_runtime() -> Any:
    """The onnxruntime module, or a SetupError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise SetupError(RUNTIME_MISSING) from e
    return onnxruntime


class OnnxRunner:
    """An onnxruntime session; ``runner(tensors)`` -> output tensors (CPU, fp32)."""

    format = "onnx"

    def __init__(self, path: Path, device: torch.device | None = None):
        ort = onnx_runtime()
        providers = ["CPUExecutionProvider"]
        if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        try:
            with quiet():
                self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own types for unreadable files)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path}: not an ONNX model onnxruntime can load ({first})") from None
        raw = self.session.get_modelmeta().custom_metadata_map
        self.metadata = _decode(path, raw, "metadata_props")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
        # an fp16 graph (export --half) takes fp16 inputs
        self.input_types = [torch.float16 if i.type == "tensor(float16)" else torch.float32
                            for i in self.session.get_inputs()]

    def __call__(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feed = {name: t.detach().to(dtype).cpu().contiguous().numpy()
                for name, t, dtype in zip(self.input_names, tensors, self.input_types)}
        return [torch.from_numpy(a).float() for a in self.session.run(self.output_names, feed)]


class TorchScriptRunner:
    """A TorchScript module on ``device``; ``runner(tensors)`` -> output tensors (the caller's autocast applies)."""

    format = "torchscript"

    def __init__(self, path: Path, device: torch.device):
        if not zipfile.is_zipfile(path):
            raise WeightsError(f"{path}: not a TorchScript archive (a zip written by torch.jit.save)")
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("/extra/config.json")), None)
            text = archive.read(member).decode("utf-8") if member else ""
        try:
            meta = json.loads(text) if text else None
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict):
            raise WeightsError(f"{path} " + NOT_OURS.format(what="extra/config.json"))
        self.metadata = _check(path, meta, "extra/config.json")
        try:
            with quiet():
                self.module = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path}: its TorchScript graph cannot be loaded ({first})") from None
        self.input_names, self.output_names = list(meta["inputs"]), list(meta["outputs"])
        self.input_shapes = {}
        self.half = bool(meta.get("half", False))  # an fp16 graph (export --half): fp16 in, fp32 out

    def __call__(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self.half:
            tensors = [t.half() for t in tensors]
        # the plain interpreter: the profiling executor re-optimises for every new shape (rect batches), which
        # cost seconds per batch here for no gain on CPU convolutions
        with torch.jit.optimized_execution(False):
            outputs = self.module(*tensors)
        outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        return [o.float() for o in outputs] if self.half else outputs


class OpenCVRunner:
    """An ONNX file in OpenCV's DNN module (stock's ``--dnn``: no onnxruntime needed); ``runner(tensors)`` ->
    output tensors (CPU, fp32). The metadata is read with ``onnx`` (OpenCV does not expose it)."""

    format = "onnx"

    def __init__(self, path: Path):
        import cv2

        try:
            import onnx
        except ImportError as e:
            raise SetupError("--dnn reads the .onnx file's metadata with onnx: pip install onnx") from e
        try:
            proto = onnx.load(str(path), load_external_data=False)
            self.net = cv2.dnn.readNetFromONNX(str(path))
        except Exception as e:  # noqa: BLE001  (onnx and OpenCV raise their own types for unreadable files)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path}: not an ONNX model OpenCV DNN can load ({first})") from None
        self.metadata = _decode(path, {p.key: p.value for p in proto.metadata_props}, "metadata_props")
        inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in proto.graph.output]
        self.input_shapes = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
                             for i in inputs}
        fp16 = onnx.TensorProto.FLOAT16
        self.input_types = [torch.float16 if i.type.tensor_type.elem_type == fp16 else torch.float32
                            for i in inputs]

    def __call__(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        for name, t, dtype in zip(self.input_names, tensors, self.input_types):
            self.net.setInput(t.detach().to(dtype).cpu().contiguous().numpy(), name)
        outputs = self.net.forward(self.output_names)
        return [torch.from_numpy(a).float() for a in outputs]


def refuse_dnn(weights: Any, dnn: bool) -> None:
    """``--dnn`` with weights that are not an .onnx file: say so (stock ignores the flag then)."""
    if dnn:
        raise FlagError(f"--dnn runs .onnx files in OpenCV DNN; {Path(str(weights)).name} is not one (export it "
                        f"with export.py, or drop --dnn)")


def open_runner(path: Path, device: torch.device, dnn: bool = False
                ) -> OnnxRunner | TorchScriptRunner | OpenCVRunner:
    """The runner for ``path`` by its suffix (``dnn``: an .onnx file in OpenCV DNN instead of onnxruntime), its
    metadata checked against its graph's inputs and outputs."""
    onnx_file = path.suffix.lower() == ".onnx"
    if not onnx_file:
        refuse_dnn(path, dnn)
    runner = (OpenCVRunner(path) if dnn else OnnxRunner(path, device)) if onnx_file else TorchScriptRunner(path, device)
    meta = runner.metadata
    if runner.input_names != meta["inputs"] or runner.output_names != meta["outputs"]:
        raise WeightsError(f"{path}: its graph has inputs {runner.input_names} and outputs {runner.output_names}, "
                           f"its metadata names {meta['inputs']} and {meta['outputs']}")
    return runner


def _decode(path: Path, raw: dict[str, str], where: str) -> dict[str, Any]:
    """Our ``metadata_props`` values are JSON texts (as :func:`..exporter.onnx_result` writes them); others
    (onnxruntime's quantiser adds ``onnx.infer``) are kept as they are."""
    if not str(raw.get("producer", "")).strip('"').startswith("yolostitch"):
        raise WeightsError(f"{path} " + NOT_OURS.format(what=where))
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError as e:
            if key in REQUIRED_KEYS or key == "producer":
                raise WeightsError(f"{path}: its {where} entry {key!r} is not the JSON yolostitch writes "
                                   f"({e})") from None
            meta[key] = value
    return _check(path, meta, where)


def _check(path: Path, meta: dict[str, Any], where: str) -> dict[str, Any]:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing or not str(meta.get("producer", "")).startswith("yolostitch"):
        raise WeightsError(f"{path} " + NOT_OURS.format(what=f"{where} lacks {missing or ['producer']}"))
    return meta
