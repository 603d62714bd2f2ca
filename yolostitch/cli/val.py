"""``yolostitch val`` / ``val.py``: box P, R, mAP50, mAP50-95 of weights on a dataset split."""

from __future__ import annotations

import argparse

from .amp import add_inference_arguments, check_half, int_at_least


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a yolostitch checkpoint, a stock YOLOv5 .pt, or an .onnx / "
                   ".torchscript written by export.py")
    p.add_argument("--data", default="shapes.yaml", help="data YAML")
    p.add_argument("--imgsz", "--img", "--img-size", type=int_at_least(1), default=640, help="inference size (pixels)")
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--conf-thres", type=float, default=0.001)
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int_at_least(1), default=300)
    p.add_argument("--task", default="val", choices=["train", "val", "test"])
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--workers", type=int_at_least(0), default=8)
    p.add_argument("--save-json", action="store_true", help="also write COCO-format predictions.json")
    p.add_argument("--save-txt", action="store_true", help="save each image's predictions to <run>/labels/*.txt "
                   "(detect.py --save-txt's lines)")
    p.add_argument("--save-conf", action="store_true", help="append confidences to --save-txt lines")
    p.add_argument("--verbose", action="store_true", help="a row per class (default: with fewer than 50 classes, "
                   "as stock)")
    p.add_argument("--single-cls", action="store_true", help="every label as class 0, for weights trained with "
                   "--single-cls")
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--features", default="", help="feature cache (extract.py) for a FeatureInput model; without it "
                   "such a model runs the extractor it was trained with online, if it was")
    add_inference_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..engine.validator import run_val

    check_half(args)
    run_val(args.weights, args.data, args.imgsz, args.batch_size, args.conf_thres, args.iou_thres, args.max_det,
            args.task, args.device, args.workers, args.save_json, args.project, args.name, args.exist_ok,
            features=args.features, extractor=args.extractor, extractor_weights=args.extractor_weights,
            amp=args.amp, single_cls=args.single_cls, augment=args.augment, save_txt=args.save_txt,
            save_conf=args.save_conf, per_class=True if args.verbose else None, dnn=args.dnn)
    return 0
