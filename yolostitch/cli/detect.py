"""``yolostitch detect`` / ``detect.py``: run weights on images, directories, globs, .txt lists or videos."""

from __future__ import annotations

import argparse

from .amp import add_image_size_argument, add_inference_arguments, check_half, image_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a yolostitch checkpoint, a stock YOLOv5 .pt, or an .onnx / "
                   ".torchscript written by export.py")
    p.add_argument("--source", default="",
                   help="image, directory, glob, .txt list of paths, or video file (local only: no URLs/webcams); "
                        "with --features it may be left out: every image of the cache")
    add_image_size_argument(p, "inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--classes", nargs="+", type=int, help="keep only these classes: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--save-txt", action="store_true", help="save results to <run>/labels/*.txt (YOLO format)")
    p.add_argument("--save-conf", action="store_true", help="append confidences to --save-txt lines")
    p.add_argument("--save-crop", action="store_true", help="save each detection cut out, to <run>/crops/<class>/")
    p.add_argument("--nosave", action="store_true", help="do not save annotated images/videos")
    p.add_argument("--project", default="runs/detect", help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", type=int, default=3, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    p.add_argument("--view-img", action="store_true", help="show each result in a window (needs a display)")
    p.add_argument("--visualize", action="store_true", help="save each layer's feature maps per image, to "
                   "<run>/<image>/stage{i}_{Module}_features.png")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride: every N-th frame")
    p.add_argument("--features", default="", help="feature cache (extract.py) of the source images, for a "
                   "FeatureInput model")
    add_inference_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..engine.detector import iter_detect
    from ..errors import FlagError

    check_half(args)
    if not args.source and not args.features:
        raise FlagError("--source: give images, a folder, a glob, a .txt list or a video (or --features DIR)")

    for _ in iter_detect(args.weights, args.source, image_size(args.imgsz), args.conf_thres, args.iou_thres,
                         args.max_det, args.device, args.classes, args.agnostic_nms, save=not args.nosave,
                         save_txt=args.save_txt, save_conf=args.save_conf, project=args.project, name=args.name,
                         exist_ok=args.exist_ok, line_thickness=args.line_thickness, hide_labels=args.hide_labels,
                         hide_conf=args.hide_conf, verbose=True, features=args.features, extractor=args.extractor,
                         extractor_weights=args.extractor_weights, amp=args.amp, save_crop=args.save_crop,
                         augment=args.augment, vid_stride=args.vid_stride, visualize=args.visualize,
                         view_img=args.view_img, dnn=args.dnn):
        pass  # results are written as they come; none is kept (videos can be long)
    return 0
