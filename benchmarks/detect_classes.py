"""How often detect.py's classes are right on a validation split: for each labelled box, the most confident
detection overlapping it (IoU >= 0.5) at detect.py's default thresholds, and whether its class is the label's.

    python benchmarks/detect_classes.py runs/train/exp/weights/best.pt shapes.yaml --imgsz 320

Prints the boxes whose top detection has the right class, the wrong class, or that no detection overlaps, and
the images without any detection (the README's main-job figures).
"""

from __future__ import annotations

import argparse

import torch
from torchvision.ops import box_iou
from _common import use_this_checkout

use_this_checkout()

from yolostitch.data.config import load_data_config  # noqa: E402
from yolostitch.data.scan import scan_split  # noqa: E402
from yolostitch.engine.detector import Detector  # noqa: E402

import cv2  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights")
    p.add_argument("data")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--conf-thres", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.5, help="overlap that puts a detection on a labelled box")
    args = p.parse_args()
    data = load_data_config(args.data)
    labels = scan_split(data.splits.get("val") or data.splits["train"], data.nc, data.kpt_shape).labels
    detector = Detector(args.weights, args.imgsz, conf_thres=args.conf_thres, device="cpu")
    right = wrong = none = empty = 0
    for lab in labels:
        result = detector(cv2.imread(str(lab.im_file)))
        h, w = lab.shape
        xywh = torch.as_tensor(lab.bboxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([w, h, w, h])
        truth = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        boxes, conf, cls = result["boxes"].float(), result["conf"], result["cls"]
        empty += len(boxes) == 0
        overlap = box_iou(truth, boxes) if len(boxes) else torch.zeros(len(truth), 0)
        for i in range(len(truth)):
            on = (overlap[i] >= args.iou).nonzero().flatten()
            if not len(on):
                none += 1
                continue
            top = on[conf[on].argmax()]
            right += int(cls[top]) == int(lab.cls[i])
            wrong += int(cls[top]) != int(lab.cls[i])
    print(f"{right + wrong + none} labelled boxes in {len(labels)} images: the most confident detection on it has "
          f"the right class for {right}, the wrong class for {wrong}, none for {none}; {empty} images without "
          f"any detection")


if __name__ == "__main__":
    main()
