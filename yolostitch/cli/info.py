"""``yolostitch info``: build a model (or load weights) and print its layer table and summary."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", default="yolov5s.yaml", help="model YAML: a path or a built-in name (yolov5s.yaml)")
    p.add_argument("--weights", default="", help="a yolostitch or stock YOLOv5 .pt to load instead of --cfg")
    p.add_argument("--nc", type=int, default=None, help="override the YAML's number of classes")
    p.add_argument("--imgsz", type=int, default=640, help="image size for the GFLOPs figure")


def run(args: argparse.Namespace) -> int:
    from .. import build_model, load_model

    model = load_model(args.weights) if args.weights else build_model(args.cfg, nc=args.nc)
    model.info(imgsz=args.imgsz)
    return 0
