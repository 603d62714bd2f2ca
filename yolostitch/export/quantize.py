"""Dynamic int8 quantisation of an exported ONNX model with onnxruntime, and what it costs and gains.

Dynamic quantisation needs no calibration data: weights are stored as int8 (about 4x smaller) and
activations are quantised on the fly. Whether it is faster depends on the CPU's integer kernels, and decoded
outputs move by a few pixels, so :func:`int8_report` measures size, difference and latency rather than
assuming them.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._deps import quiet, require_onnx
from .wrapper import IMAGE_INPUT


@dataclass
class Int8Report:
    """An int8 model against the fp32 one it was made from."""

    path: Path
    scheme: str  # what was quantised, e.g. "dynamic int8, QInt8 weights, all supported ops"
    size_ratio: float  # int8 size / fp32 size
    max_diff: float  # max |int8 - fp32| / max(1, |fp32|) over all outputs
    latency_fp32_ms: float  # median over the timed runs, CPUExecutionProvider
    latency_int8_ms: float

    @property
    def latency_ratio(self) -> float:
        return self.latency_int8_ms / self.latency_fp32_ms


def quantize_int8(onnx_path: str | Path, output: str | Path | None = None) -> Path:
    """Quantise ``onnx_path`` dynamically to int8 (default output ``<stem>-int8.onnx``); return the path.

    Schemes are tried in order until onnxruntime can run the result on this CPU: all supported ops with
    unsigned int8 weights, then signed, then MatMul/Gemm only (convolutions stay fp32, for builds without
    ConvInteger). Unsigned first: onnxruntime 1.32's x86 ConvInteger was about 3x slower with signed weights
    (yolov5n at 320: u8 about as fast as fp32, s8 3x slower; s8 was somewhat closer to fp32).
    The scheme used is stored in the file's ``quantization`` metadata.
    """
    onnx, ort = require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    output = Path(output) if output is not None else onnx_path.with_name(f"{onnx_path.stem}-int8.onnx")
    schemes: list[tuple[str, dict[str, Any]]] = [
        ("dynamic int8, QUInt8 weights, all supported ops", {"weight_type": QuantType.QUInt8}),
        ("dynamic int8, QInt8 weights, all supported ops", {"weight_type": QuantType.QInt8}),
        ("dynamic int8, MatMul/Gemm only (ConvInteger unsupported: convolutions stay fp32)",
         {"weight_type": QuantType.QInt8, "op_types_to_quantize": ["MatMul", "Gemm"]}),
    ]
    failures = []
    for scheme, options in schemes:
        try:
            with quiet():
                quantize_dynamic(str(onnx_path), str(output), **options)
            session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
            session.run(None, example_feed(session))
        except Exception as e:  # noqa: BLE001  (an unsupported kernel surfaces as any of several types)
            failures.append(f"{scheme}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        proto = onnx.load(str(output))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "quantization", json.dumps(scheme)
        onnx.save(proto, str(output))
        return output
    output.unlink(missing_ok=True)
    raise RuntimeError(f"int8 quantisation of {onnx_path} failed on this onnxruntime "
                       f"({ort.__version__}): " + "; ".join(failures))


def int8_report(fp32_path: str | Path, int8_path: str | Path,
                inputs: Mapping[str, np.ndarray] | None = None, runs: int = 5) -> Int8Report:
    """Size ratio, largest output difference and median CPU latency over ``runs`` (after one warm-up run) of
    the int8 model against the fp32 one, on ``inputs`` (default: random inputs of the model's shapes)."""
    onnx, ort = require_onnx()
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    fp32 = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    feed = dict(inputs) if inputs is not None else example_feed(fp32)
    reference, quantised = fp32.run(None, feed), int8.run(None, feed)
    diff = 0.0
    for a, b in zip(reference, quantised):
        if a.size:
            diff = max(diff, float((np.abs(a.astype(np.float64) - b) / np.maximum(np.abs(a), 1.0)).max()))
    props = {p.key: p.value for p in onnx.load(str(int8_path), load_external_data=False).metadata_props}
    scheme = json.loads(props["quantization"]) if "quantization" in props else "dynamic int8"
    return Int8Report(int8_path, scheme, int8_path.stat().st_size / fp32_path.stat().st_size, diff,
                      _latency_ms(fp32, feed, runs), _latency_ms(int8, feed, runs))


def example_feed(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for an onnxruntime session from its declared shapes (a symbolic batch dimension is 1,
    symbolic heights and widths those of the export size in the file's metadata): images in [0, 1), feature
    maps standard normal."""
    rng = np.random.default_rng(seed)
    feed = {}
    for i in session.get_inputs():
        size = _export_size(session, i.name)
        shape = [d if isinstance(d, int) and d > 0 else (1 if axis < 2 else size[axis - 2])
                 for axis, d in enumerate(i.shape)]
        x = rng.random(shape) if i.name == IMAGE_INPUT else rng.standard_normal(shape)
        feed[i.name] = x.astype(np.float32)
    return feed


def _export_size(session: Any, name: str) -> tuple[int, int]:
    """(h, w) of input ``name`` at the export size recorded in the metadata ((1, 1) if none is)."""
    meta = session.get_modelmeta().custom_metadata_map
    if "imgsz" not in meta:
        return 1, 1
    h, w = json.loads(meta["imgsz"])
    contract = json.loads(meta.get("feature_contract", "{}"))
    inputs = json.loads(meta.get("inputs", "[]"))
    strides = dict(zip(inputs[len(inputs) - len(contract):], (c["stride"] for c in contract.values())))
    stride = strides.get(name, 1)
    return -(-h // stride), -(-w // stride)


def _latency_ms(session: Any, feed: Mapping[str, np.ndarray], runs: int) -> float:
    session.run(None, feed)  # warm-up: first run allocates and plans
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
