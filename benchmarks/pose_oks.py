"""Per labelled person, how close trained keypoints come: the OKS of each person's best-matching detection, on the
training and val splits, beside the median training pose placed in the person's true box (a template baseline).

    python benchmarks/pose_split.py --out /tmp/persons                      # the split, once
    python benchmarks/pose_oks.py /tmp/persons/persons.yaml runs/train/exp/weights/last.pt [more.pt ...]

A person is matched to the detection (conf >= ``--conf``) with the highest box IoU, if that IoU is >= 0.5; an
unmatched person counts as OKS 0. OKS uses the COCO sigmas and 0.53 x the true box area as the scale, as
``val.py``. Pose mAP50 needs a person's OKS >= 0.5, so the count at 0.5 says how many persons could count at
all; the median says how far the rest are. Comparing the training split's numbers with val's separates a
branch that cannot fit from one that cannot generalise.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torchvision.ops import box_iou

from yolostitch.data.config import load_data_config
from yolostitch.data.scan import scan_split
from yolostitch.engine.detector import detect
from yolostitch.engine.metrics import keypoint_oks
from yolostitch.tasks.keypoints import OKS_AREA
from yolostitch.weights import load_model


def labelled_persons(labels) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(image, xyxy box in pixels, (K, 3) keypoints in pixels) for every instance with a labelled keypoint."""
    persons = []
    for lab in labels:
        h, w = lab.shape
        for box, kpts in zip(np.asarray(lab.bboxes), np.asarray(lab.keypoints)):
            if (kpts[:, 2] > 0).any():
                cx, cy, bw, bh = box * [w, h, w, h]
                persons.append((lab.im_file, np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]),
                                kpts * [w, h, 1]))
    return persons


def oks(kpts: np.ndarray, pred: np.ndarray, box: np.ndarray) -> float:
    area = torch.tensor([(box[2] - box[0]) * (box[3] - box[1]) * OKS_AREA], dtype=torch.float32)
    return float(keypoint_oks(torch.tensor(kpts[None], dtype=torch.float32),
                              torch.tensor(pred[None], dtype=torch.float32), area)[0, 0])


def median_pose(persons) -> np.ndarray:
    """(K, 2) median keypoint position in box units (0..1 from the top-left corner), labelled keypoints only; a
    keypoint never labelled sits at the box centre."""
    offsets = []
    for _, box, kpts in persons:
        o = (kpts[:, :2] - box[:2]) / (box[2:] - box[:2])
        o[kpts[:, 2] == 0] = np.nan
        offsets.append(o)
    stacked = np.stack(offsets)
    labelled = ~np.isnan(stacked).all(0)
    return np.where(labelled, np.nanmedian(np.where(labelled, stacked, 0.5), 0), 0.5)


def model_oks(model, persons, imgsz: int, conf: float) -> np.ndarray:
    scores, by_image = [], {}
    for image, box, kpts in persons:
        if image not in by_image:
            by_image[image] = detect(model, image, imgsz=imgsz, conf_thres=conf)[0]
        result = by_image[image]
        boxes = torch.as_tensor(np.asarray(result["boxes"]), dtype=torch.float32).reshape(-1, 4)
        if not len(boxes):
            scores.append(0.0)
            continue
        iou = box_iou(torch.tensor(box[None], dtype=torch.float32), boxes)[0]
        j = int(iou.argmax())
        pred = np.asarray(result["keypoints"], dtype=np.float64)[j].reshape(len(kpts), -1)
        scores.append(oks(kpts, pred, box) if iou[j] >= 0.5 else 0.0)
    return np.array(scores)


def line(name: str, scores: np.ndarray) -> str:
    return f"{name}: {len(scores)} persons, median OKS {np.median(scores):.3f}, >= 0.5: {int((scores >= 0.5).sum())}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="data YAML with train and val splits and kpt_shape")
    parser.add_argument("weights", nargs="*", help="trained keypoint models (.pt)")
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--conf", type=float, default=0.1)
    opt = parser.parse_args()
    data = load_data_config(opt.data)
    splits = {s: labelled_persons(scan_split(data.splits[s], data.nc, data.kpt_shape).labels) for s in ("train", "val")}
    template = median_pose(splits["train"])
    for split, persons in splits.items():
        placed = np.array([oks(kpts, box[:2] + template * (box[2:] - box[:2]), box) for _, box, kpts in persons])
        print(line(f"median training pose in the true box, {split}", placed))
    for weights in opt.weights:
        model = load_model(weights)
        print(weights + "\n  " + "\n  ".join(line(s, model_oks(model, p, opt.imgsz, opt.conf))
                                             for s, p in splits.items()))


if __name__ == "__main__":
    main()
