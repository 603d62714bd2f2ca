"""Multi-task cost and accuracy: det+seg+kpt on one backbone vs det-only, and vs three single-task models.

    python benchmarks/multitask.py                 # cost only: a few minutes on a 2-core CPU
    python benchmarks/multitask.py --epochs 10     # plus accuracy: trains 4 models with one recipe (long)

Cost: per-image training step (forward + loss + backward, no optimizer step) and inference
(forward + one NMS carrying masks and keypoints, plus mask assembly) on the same batches of the built-in
shapes data, timed after warm-up. References measured in the same run: the det-only model (ratio targets:
training <= 1.3x, inference <= 1.2x) and the sum of three single-task models (det, seg, pose; each seg/pose
model carries the detector its branch shares, as in YOLOv5-seg and YOLO-Pose).
Accuracy (with --epochs): each of yolov5n, -seg, -pose, -multitask trained from scratch with the same
recipe and validated; box mAP of the multi-task model vs det-only (target: within 1 point).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from yolostitch import build_model
from yolostitch.data.config import load_data_config
from yolostitch.data.dataset import MultiTaskDataset, collate
from yolostitch.data.scan import scan_split
from yolostitch.engine.predict import postprocess
from yolostitch.engine.trainer import TrainOptions, load_hyp, train
from yolostitch.losses import ComputeLoss

MODELS = {"det": "yolov5n.yaml", "seg": "yolov5n-seg.yaml", "pose": "yolov5n-pose.yaml",
          "multitask": "yolov5n-multitask.yaml"}


def batches(data, imgsz: int, batch_size: int, n: int) -> list[dict]:
    scan = scan_split(data.splits["train"], data.nc, data.kpt_shape)
    dataset = MultiTaskDataset(scan.labels, imgsz, augment=True, hyp=load_hyp("hyp.scratch-low.yaml"),
                               kpt_shape=data.kpt_shape, flip_idx=data.flip_idx, use_masks=True)
    torch.manual_seed(0)
    order = torch.randperm(len(dataset)).tolist()
    return [collate([dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]]) for b in range(n)]


def step_cost(cfg: str, data, samples: list[dict], imgsz: int, repeats: int) -> tuple[float, float]:
    """Seconds per image: (training step, inference)."""
    torch.manual_seed(0)
    model = build_model(cfg, nc=data.nc, kpt_shape=data.kpt_shape)
    loss = ComputeLoss(model, load_hyp("hyp.scratch-low.yaml"), imgsz)
    images = [b["img"].float() / 255 for b in samples]
    n_images = sum(len(x) for x in images) * repeats

    def train_pass() -> None:
        for x, b in zip(images, samples):
            model.zero_grad(set_to_none=True)
            total, _ = loss(model(x), b)
            total.backward()

    def infer_pass() -> None:
        with torch.no_grad():
            for x in images:
                for det in postprocess(model(x), 0.001, 0.6, nc=model.nc, multi_label=True, max_det=300,
                                       kpt_shape=model.kpt_shape):
                    det.masks(x.shape[2:])

    model.train()
    train_pass()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        train_pass()
    train_s = (time.perf_counter() - start) / n_images
    model.eval()
    infer_pass()
    start = time.perf_counter()
    for _ in range(repeats):
        infer_pass()
    return train_s, (time.perf_counter() - start) / n_images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=4, help="distinct batches timed per pass")
    p.add_argument("--repeats", type=int, default=2, help="timed passes over those batches")
    p.add_argument("--epochs", type=int, default=0, help="also train each model this long and compare mAP")
    p.add_argument("--hyp", default="hyp.scratch-low.yaml")
    p.add_argument("--project", default="runs/benchmarks/multitask")
    p.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    args = p.parse_args()
    data = load_data_config(args.data)
    samples = batches(data, args.imgsz, args.batch_size, args.batches)
    print(f"cost per image, yolov5n, imgsz {args.imgsz}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    cost = {name: step_cost(cfg, data, samples, args.imgsz, args.repeats) for name, cfg in MODELS.items()}
    det_train, det_infer = cost["det"]
    singles_train = sum(cost[k][0] for k in ("det", "seg", "pose"))
    singles_infer = sum(cost[k][1] for k in ("det", "seg", "pose"))
    lines = ["| model | train ms/img | vs det-only | infer ms/img | vs det-only |", "|---|---|---|---|---|"]
    for name, (tr, inf) in cost.items():
        lines.append(f"| {name} | {tr * 1e3:.1f} | {tr / det_train:.2f}x | {inf * 1e3:.1f} | {inf / det_infer:.2f}x |")
    lines.append(f"| det + seg + pose (3 models) | {singles_train * 1e3:.1f} | {singles_train / det_train:.2f}x | "
                 f"{singles_infer * 1e3:.1f} | {singles_infer / det_infer:.2f}x |")
    tr, inf = cost["multitask"]
    lines.append(f"\nmulti-task vs det-only: training {tr / det_train:.2f}x (target <= 1.3x), inference "
                 f"{inf / det_infer:.2f}x (target <= 1.2x); vs three single-task models: training "
                 f"{tr / singles_train:.2f}x, inference {inf / singles_infer:.2f}x")
    print("\n".join(lines), flush=True)
    if args.epochs:
        lines += ["", f"accuracy after {args.epochs} epochs ({args.hyp}, imgsz {args.imgsz}, batch {args.batch_size})",
                  "| model | box mAP50 | box mAP50-95 | mask mAP50-95 | pose mAP50-95 | train time |",
                  "|---|---|---|---|---|---|"]
        results = {}
        for name, cfg in MODELS.items():
            start = time.perf_counter()
            r = train(TrainOptions(cfg=cfg, data=args.data, hyp=args.hyp, epochs=args.epochs, imgsz=args.imgsz,
                                   batch_size=args.batch_size, workers=2, project=args.project, name=name,
                                   noval=True))
            results[name] = {**r, "seconds": time.perf_counter() - start}
            lines.append(f"| {name} | {r['box_map50']:.3f} | {r['box_map']:.3f} | {r.get('mask_map', float('nan')):.3f} | "
                         f"{r.get('pose_map', float('nan')):.3f} | {results[name]['seconds'] / 60:.1f} min |")
            print(lines[-1], flush=True)
        gap = (results["multitask"]["box_map"] - results["det"]["box_map"]) * 100
        lines.append(f"\nmulti-task box mAP50-95 minus det-only: {gap:+.1f} points (target: within 1 point)")
        print(lines[-1])
        Path(args.project).mkdir(parents=True, exist_ok=True)
        (Path(args.project) / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
