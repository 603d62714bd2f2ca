"""``yolostitch compare`` / ``compare.py``: train or validate several models on one dataset and tabulate them."""

from __future__ import annotations

import argparse

from .amp import add_amp_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="shapes.yaml", help="data YAML (default: the built-in synthetic data)")
    p.add_argument("--cfg", nargs="+", default=[], help="model YAMLs to train with the shared recipe, e.g. "
                   "yolov5n.yaml yolov5n-multitask.yaml yolov5n-feat.yaml")
    p.add_argument("--weights", nargs="+", default=[], help="checkpoints to validate only (no training)")
    p.add_argument("--init", default="", metavar="WEIGHTS", help="a local .pt every trained row starts from: ours "
                   "as train.py --weights, stock's as its own train.py --weights (e.g. yolov5n.pt)")
    p.add_argument("--no-class-transfer", dest="class_transfer", action="store_false",
                   help="--init: do not copy the Detect class rows of the data's classes that the checkpoint also "
                        "names (ours only; stock never does)")
    p.add_argument("--features", default="", help="feature cache (extract.py) for the FeatureInput models")
    p.add_argument("--stitch-init", nargs="?", type=int, const=64, default=0, metavar="N",
                   help="FeatureInput rows with --init: fit their adapters by least squares on N training images "
                        "(default 64) to --init's backbone, as train.py --stitch-init")
    p.add_argument("--stock", action="store_true", help="add a row from the real stock YOLOv5 (pip yolov5) for "
                   "each stock architecture among --cfg, trained with the same data, recipe and epochs")
    p.add_argument("--hyp", default="hyp.scratch-low.yaml", help="hyperparameter YAML shared by every run")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640)
    p.add_argument("--device", default="", help="training device: cuda device, i.e. 0 or cpu (latency is on CPU)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-images", type=int, default=20, help="val images to time inference on (batch 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the latency figures, stock's too "
                   "(default: torch's default)")
    p.add_argument("--project", default="runs/compare")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    add_amp_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..compare import CompareOptions, compare

    compare(CompareOptions(**{k: v for k, v in vars(args).items() if k in CompareOptions.__dataclass_fields__}))
    return 0
