"""``yolostitch export`` / ``export.py``: write weights as ONNX / TorchScript (verified), optionally int8 ONNX
or fp16."""

from __future__ import annotations

import argparse
import sys

from .amp import add_image_size_argument, image_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a yolostitch checkpoint or a stock YOLOv5 .pt")
    p.add_argument("--include", nargs="+", choices=("onnx", "torchscript"), default=["onnx"],
                   help="formats to write next to the weights: onnx, torchscript")
    add_image_size_argument(p, "input size (pixels, multiples of the model's largest stride)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the exported graph")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--dynamic", action="store_true",
                   help="ONNX: dynamic batch, height and width (val/detect then run it as the .pt: rect batches)")
    p.add_argument("--opset", type=int, default=17, help="ONNX: opset version")
    p.add_argument("--int8", action="store_true",
                   help="also write <weights>-int8.onnx (onnxruntime dynamic quantisation; implies onnx)")
    p.add_argument("--half", action="store_true", help="FP16 half-precision export (fp16 weights and inputs; "
                   "verified against the fp32 model; stock needs --device 0 for it, torch here runs fp16 on CPUs)")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify the graph (onnxslim, else onnxsim)")


def run(args: argparse.Namespace) -> int:
    from ..export import export_weights

    try:
        results = export_weights(args.weights, args.include, image_size(args.imgsz), args.batch_size, args.device,
                                 args.dynamic, args.opset, args.int8, args.half, args.simplify)
    except ImportError as e:  # a missing optional dependency is a user error too: one line, no traceback
        print(f"yolostitch export: error: {e}", file=sys.stderr)
        return 2
    for result in results:
        print(result.line())
    return 0
